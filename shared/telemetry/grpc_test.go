package telemetry

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
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
