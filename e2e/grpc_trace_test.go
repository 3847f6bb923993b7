package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/telemetry"
)

// slowExporter exports slowly and records when each export finished, so a
// test can tell whether the client saw the end of its call before or after
// the call's spans were exported.
type slowExporter struct {
	*tracetest.InMemoryExporter
	delay time.Duration
	mu    sync.Mutex
	done  []time.Time
}

func (e *slowExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	time.Sleep(e.delay)
	err := e.InMemoryExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	e.done = append(e.done, time.Now())
	e.mu.Unlock()
	return err
}

func (e *slowExporter) lastExport() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.done) == 0 {
		return time.Time{}
	}
	return e.done[len(e.done)-1]
}

// gRPC calls get otelgrpc server spans named as upstream's, continuing the
// caller's traceparent metadata, with challfn's spans below them, and the
// spans are exported before the client sees the end of the call (unary and
// server stream alike): nothing is left to export when a serverless
// instance is frozen after its response.
func TestGRPCTraceAndFlush(t *testing.T) {
	ctx := context.Background()
	exp := &slowExporter{InMemoryExporter: tracetest.NewInMemoryExporter(), delay: 300 * time.Millisecond}
	tel, err := telemetry.Setup(ctx, "challfn-e2e", "test", telemetry.WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tel.Shutdown(ctx)
		telemetry.SetDefault(nil)
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
	})
	env := testenv.Start(t, testenv.Options{Events: testenv.Inline})
	conn := gcDial(t, env)
	lcCreateChallenge(t, env, `{"id":"tr","scenario":"`+env.Scenario(t, "outputs")+`"}`)

	call := func(method string, stream bool, req any) (tid trace.TraceID, parent trace.SpanID, returned time.Time, err error) {
		_, _ = rand.Read(tid[:])
		_, _ = rand.Read(parent[:])
		tp := "00-" + hex.EncodeToString(tid[:]) + "-" + hex.EncodeToString(parent[:]) + "-01"
		cctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "traceparent", tp), gcTimeout)
		defer cancel()
		if stream {
			var s grpc.ClientStream
			s, err = conn.NewStream(cctx, &grpc.StreamDesc{ServerStreams: true}, method)
			if err == nil {
				_ = s.SendMsg(req)
				_ = s.CloseSend()
				for err == nil {
					err = s.RecvMsg(new(api.Challenge))
				}
				if err.Error() == "EOF" {
					err = nil
				}
			}
		} else {
			err = conn.Invoke(cctx, method, req, new(api.Challenge))
		}
		return tid, parent, time.Now(), err
	}
	for _, c := range []struct {
		name   string
		method string
		stream bool
		req    any
		code   codes.Code
	}{
		{"unary", gcChallenge + "RetrieveChallenge", false, &api.RetrieveChallengeRequest{ID: "tr"}, codes.OK},
		{"unary failing", gcChallenge + "RetrieveChallenge", false, &api.RetrieveChallengeRequest{ID: "nope"}, codes.NotFound},
		{"server stream", gcChallenge + "QueryChallenge", true, &api.Empty{}, codes.OK},
	} {
		t.Run(c.name, func(t *testing.T) {
			tid, parent, returned, err := call(c.method, c.stream, c.req)
			if status.Code(err) != c.code {
				t.Fatalf("call: %v, want %v", err, c.code)
			}
			// No Flush here: what is exported was exported by the server.
			var server *tracetest.SpanStub
			children := 0
			spans := exp.GetSpans()
			for i, s := range spans {
				if s.SpanContext.TraceID() != tid {
					continue
				}
				if s.SpanKind == trace.SpanKindServer && s.Name == c.method[1:] {
					server = &spans[i]
				}
			}
			if server == nil {
				t.Fatalf("no server span %q in trace %s among %d exported spans", c.method[1:], tid, len(spans))
			}
			if server.Parent.SpanID() != parent || !server.Parent.IsRemote() {
				t.Errorf("server span's parent %v, want the caller's %v", server.Parent.SpanID(), parent)
			}
			for _, s := range spans {
				if s.Parent.SpanID() == server.SpanContext.SpanID() {
					children++
				}
			}
			if children == 0 {
				t.Errorf("no challfn span under the server span")
			}
			if last := exp.lastExport(); !last.Before(returned) {
				t.Errorf("the client saw the end of the call at %v, before the export finished at %v", returned, last)
			}
		})
	}
}
