package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

func TestUnaryClientInterceptor(t *testing.T) {
	tel, spans, _ := newTestTelemetry(t)
	icpt := UnaryClientInterceptor("etcd")
	unavailable := status.Error(grpccodes.Unavailable, "etcd down")

	tests := []struct {
		name      string
		inRequest bool // a recording span is in ctx
		err       error
		wantSpan  bool
		wantCode  codes.Code
	}{
		{"call inside a request", true, nil, true, codes.Unset},
		{"failed call inside a request", true, unavailable, true, codes.Error},
		{"background call", false, nil, false, codes.Unset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spans.Reset()
			ctx := WithIdentity(WithChallenge(context.Background(), "web-1"), "abc123")
			ctx = WithSource(ctx, "team-7")
			var parent trace.Span
			if tt.inRequest {
				ctx, parent = tel.Tracer().Start(ctx, "request")
			}
			var invokedWith trace.SpanContext
			err := icpt(ctx, "/etcdserverpb.KV/Txn", nil, nil, nil, func(ctx context.Context, _ string, _, _ any, _ *grpc.ClientConn, _ ...grpc.CallOption) error {
				invokedWith = trace.SpanContextFromContext(ctx)
				return tt.err
			})
			if !errors.Is(err, tt.err) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if parent != nil {
				parent.End()
			}
			tel.Flush(context.Background())
			var got []string
			for _, s := range spans.GetSpans() {
				got = append(got, s.Name)
				if s.Name != "etcd Txn" {
					continue
				}
				a := attrMap(s.Attributes)
				if a["challenge_id"] != "web-1" || a["identity"] != "abc123" || a["rpc.method"] != "etcdserverpb.KV/Txn" {
					t.Errorf("attributes %v", a)
				}
				if _, ok := a["source_id"]; ok {
					t.Errorf("source id on a span: %v", a)
				}
				if s.SpanKind != trace.SpanKindClient || s.Status.Code != tt.wantCode {
					t.Errorf("kind %v status %v, want client %v", s.SpanKind, s.Status.Code, tt.wantCode)
				}
				if s.SpanContext.SpanID() != invokedWith.SpanID() {
					t.Errorf("the call did not run under the span")
				}
				if s.Parent.SpanID() != parent.SpanContext().SpanID() {
					t.Errorf("parent %v, want the request", s.Parent.SpanID())
				}
			}
			wantN := 0
			if tt.inRequest {
				wantN++
			}
			if tt.wantSpan {
				wantN++
			}
			if len(got) != wantN {
				t.Fatalf("spans %v, want %d", got, wantN)
			}
		})
	}
}

func TestStartCopiesContextIDs(t *testing.T) {
	tel, spans, _ := newTestTelemetry(t)
	SetDefault(tel)
	defer SetDefault(nil)
	ctx := WithSource(WithIdentity(WithChallenge(context.Background(), "web-1"), "abc123"), "team-7")
	_, span := Start(ctx, "pool.claim")
	span.End()
	tel.Flush(ctx)
	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("spans: %d", len(got))
	}
	a := attrMap(got[0].Attributes)
	if a["challenge_id"] != "web-1" || a["identity"] != "abc123" {
		t.Fatalf("attributes %v", a)
	}
	if _, ok := a["source_id"]; ok {
		t.Fatalf("source id on a span: %v", a)
	}
}

// A gRPC call ending with a server-side failure status that nobody explained
// gets one ERROR line; one the handler explained, or a refusal, gets none more.
func TestGRPCHandlerFailureLine(t *testing.T) {
	for _, tc := range []struct {
		name      string
		status    string // Grpc-Status the server wrote
		handlerLn bool   // the handler logs an ERROR itself
		wantLines int
	}{
		{"internal unexplained", "13", false, 1},
		{"unavailable unexplained", "14", false, 1},
		{"unknown explained", "2", true, 1},
		{"not found", "5", false, 0},
		{"unimplemented", "12", false, 0},
		{"ok", "0", false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(NewLogHandler(&buf, LogOptions{}))
			tel, err := Setup(context.Background(), "test", "v0", WithLogger(log), WithoutGlobal())
			if err != nil {
				t.Fatal(err)
			}
			var explained bool
			h := tel.GRPCHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.handlerLn {
					log.ErrorContext(r.Context(), "deployment failed", "error", "boom")
				}
				explained = FailureLogged(r.Context())
				w.Header().Set("Grpc-Status", tc.status)
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/api.v1.instance.InstanceManager/CreateInstance", nil))
			if explained != tc.handlerLn {
				t.Fatalf("FailureLogged = %v after the handler's own line: %v", explained, tc.handlerLn)
			}
			if lines := strings.Count(buf.String(), `"level":"ERROR"`); lines != tc.wantLines {
				t.Fatalf("%d ERROR lines, want %d:\n%s", lines, tc.wantLines, buf.String())
			}
			if tc.wantLines == 1 && !tc.handlerLn && !strings.Contains(buf.String(), "CreateInstance") {
				t.Fatalf("the line does not name the method:\n%s", buf.String())
			}
		})
	}
}

// noStats is a stats.Handler that does nothing (rpcEndNotifier's inner one).
type noStats struct{}

func (noStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (noStats) HandleRPC(context.Context, stats.RPCStats)                         {}
func (noStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (noStats) HandleConn(context.Context, stats.ConnStats)                       {}

// GRPCHandler flushes only once the call has ended: grpc-go's ServeHTTP
// returns when the status is written, and its handler goroutine reports the
// end (otelgrpc ends the span) after that. Here the handler returns at once
// and the end comes 200 ms later, from another goroutine, as grpc-go does.
func TestGRPCHandlerWaitsForTheCallEnd(t *testing.T) {
	tel, _, _ := newTestTelemetry(t)
	sh := rpcEndNotifier{noStats{}}
	var ended atomic.Bool
	h := tel.GRPCHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		sh.HandleRPC(ctx, &stats.Begin{})
		w.Header().Set("Grpc-Status", "0")
		go func() {
			time.Sleep(200 * time.Millisecond)
			ended.Store(true)
			sh.HandleRPC(ctx, &stats.End{})
		}()
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/api.v1.challenge.ChallengeStore/RetrieveChallenge", nil))
	if !ended.Load() {
		t.Fatal("GRPCHandler returned before the call ended: the flush could miss its span")
	}

	// A call refused before it began (no stats.Begin) is not waited for.
	start := time.Now()
	tel.GRPCHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Grpc-Status", "12")
	})).ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/nope/Nope", nil))
	if d := time.Since(start); d >= rpcEndWait {
		t.Fatalf("a call that never began was waited for (%v)", d)
	}
}
