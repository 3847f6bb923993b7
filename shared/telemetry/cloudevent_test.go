package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

func newEvent(typ string) cloudevents.Event {
	e := cloudevents.NewEvent()
	e.SetID("evt-1")
	e.SetSource("//challfn/test")
	e.SetType(typ)
	_ = e.SetData(cloudevents.ApplicationJSON, map[string]string{"challengeId": "c1"})
	return e
}

func TestEventExtensionRoundTrip(t *testing.T) {
	tel, _, _ := newTestTelemetry(t)
	ctx, span := tel.Tracer().Start(context.Background(), "producer")
	defer span.End()
	want := span.SpanContext()

	e := newEvent("io.challfn.pool.fill")
	InjectEvent(ctx, &e)
	// Through the structured JSON encoding, as a broker would carry it.
	raw, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var back cloudevents.Event
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	got := trace.SpanContextFromContext(ExtractEvent(context.Background(), back))
	if got.TraceID() != want.TraceID() || got.SpanID() != want.SpanID() || !got.IsRemote() || !got.IsSampled() {
		t.Fatalf("extracted %v, want remote %v", got, want)
	}

	// No extension: the context is left alone.
	plain := newEvent("x")
	if c := ExtractEvent(ctx, plain); trace.SpanContextFromContext(c).SpanID() != want.SpanID() {
		t.Fatal("ExtractEvent replaced the context of an event without tracing extension")
	}
}

// TestCloudEventOverHTTP sends a binary-mode event through sdk-go's real HTTP
// client to sdk-go's receive handler (what funcframework wraps), on loopback.
func TestCloudEventOverHTTP(t *testing.T) {
	tel, spans, _ := newTestTelemetry(t)
	var handlerSC trace.SpanContext
	fn := tel.CloudEvent(func(ctx context.Context, e cloudevents.Event) error {
		handlerSC = trace.SpanContextFromContext(ctx)
		return nil
	})
	p, err := cloudevents.NewHTTP()
	if err != nil {
		t.Fatal(err)
	}
	h, err := cloudevents.NewHTTPReceiveHandler(context.Background(), p, fn)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	client, err := cloudevents.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	ctx, prod := StartProducerWith(tel, context.Background(), "io.challfn.instance.delete")
	e := newEvent("io.challfn.instance.delete")
	InjectEvent(ctx, &e)
	res := client.Send(cloudevents.ContextWithTarget(ctx, srv.URL), e)
	prod.End()
	if !cloudevents.IsACK(res) {
		t.Fatalf("send: %v", res)
	}
	// Flushed before the 200 went back: the consumer span is already exported.
	var consumer *spanStub
	for _, s := range spans.GetSpans() {
		if s.SpanKind == trace.SpanKindConsumer {
			consumer = &spanStub{name: s.Name, parent: s.Parent, sc: s.SpanContext, attrs: attrMap(s.Attributes)}
		}
	}
	if consumer == nil {
		t.Fatal("no consumer span exported before the response")
	}
	if consumer.name != "process io.challfn.instance.delete" {
		t.Errorf("span name %q", consumer.name)
	}
	if consumer.parent.TraceID() != prod.SpanContext().TraceID() || consumer.parent.SpanID() != prod.SpanContext().SpanID() {
		t.Errorf("consumer parent %v, want producer %v", consumer.parent, prod.SpanContext())
	}
	if handlerSC.SpanID() != consumer.sc.SpanID() {
		t.Errorf("handler ctx carries span %s, want the consumer span %s", handlerSC.SpanID(), consumer.sc.SpanID())
	}
	if consumer.attrs["cloudevents.event_type"] != "io.challfn.instance.delete" || consumer.attrs["cloudevents.event_id"] != "evt-1" {
		t.Errorf("attributes %v", consumer.attrs)
	}
}

// StartProducerWith is StartProducer on a given Telemetry (tests do not install globals).
func StartProducerWith(tel *Telemetry, ctx context.Context, typ string) (context.Context, trace.Span) {
	return tel.Tracer().Start(ctx, "send "+typ, trace.WithSpanKind(trace.SpanKindProducer))
}

type spanStub struct {
	name   string
	parent trace.SpanContext
	sc     trace.SpanContext
	attrs  map[string]string
}

func TestCloudEventOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		ret      error
		outcome  string
		spanCode codes.Code
	}{
		{"ok", nil, OutcomeOK, codes.Unset},
		{"ack result", cehttp.NewResult(200, "fine"), OutcomeOK, codes.Unset},
		{"error is retried", errors.New("etcd down"), OutcomeError, codes.Error},
		{"5xx result", cehttp.NewResult(503, "busy"), OutcomeError, codes.Error},
		{"4xx result is rejected", cehttp.NewResult(400, "bad data"), OutcomeRejected, codes.Unset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tel, spans, reader := newTestTelemetry(t)
			fn := tel.CloudEvent(func(context.Context, cloudevents.Event) error { return tt.ret })
			if err := fn(context.Background(), newEvent("io.challfn.pool.fill")); err != tt.ret {
				t.Fatalf("wrapper returned %v, want %v unchanged", err, tt.ret)
			}
			got := spans.GetSpans()
			if len(got) != 1 || got[0].Status.Code != tt.spanCode {
				t.Fatalf("spans %d, status %v; want 1 with %v", len(got), got[0].Status.Code, tt.spanCode)
			}
			sum := findMetric(t, collect(t, reader), MetricEvents).Data.(metricdata.Sum[int64])
			if len(sum.DataPoints) != 1 || sum.DataPoints[0].Value != 1 {
				t.Fatalf("event counter %+v", sum.DataPoints)
			}
			attrs := sum.DataPoints[0].Attributes
			if v, _ := attrs.Value(AttrOutcome); v.AsString() != tt.outcome {
				t.Errorf("outcome %q, want %q", v.AsString(), tt.outcome)
			}
			if v, _ := attrs.Value(AttrEventType); v.AsString() != "io.challfn.pool.fill" {
				t.Errorf("type %q", v.AsString())
			}
		})
	}
}

func TestStartProducerInjects(t *testing.T) {
	tel, spans, _ := newTestTelemetry(t)
	SetDefault(tel)
	defer SetDefault(nil)
	e := newEvent("io.challfn.instance.update")
	_, span := StartProducer(context.Background(), &e)
	span.End()
	tel.Flush(context.Background())
	tp, _ := e.Extensions()["traceparent"].(string)
	want := "00-" + span.SpanContext().TraceID().String() + "-" + span.SpanContext().SpanID().String() + "-01"
	if tp != want {
		t.Fatalf("traceparent %q, want %q", tp, want)
	}
	s := spans.GetSpans()
	if len(s) != 1 || s[0].SpanKind != trace.SpanKindProducer || s[0].Name != "send io.challfn.instance.update" {
		t.Fatalf("producer span %+v", s)
	}
	if v := attrMap(s[0].Attributes)["cloudevents.event_source"]; v != "//challfn/test" {
		t.Errorf("event_source %q", v)
	}
}

func TestCloudEventDisabledKeepsEventTrace(t *testing.T) {
	e := newEvent("io.challfn.pool.fill")
	e.SetExtension("traceparent", incomingParent)
	var got trace.SpanContext
	recording := true
	fn := Disabled().CloudEvent(func(ctx context.Context, _ cloudevents.Event) error {
		got = trace.SpanContextFromContext(ctx)
		recording = trace.SpanFromContext(ctx).IsRecording()
		return nil
	})
	if err := fn(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	// The work runs in a child span of the event's (its logs carry the trace id), that
	// nothing records.
	if got.TraceID().String() != incomingTraceID || got.SpanID().String() == incomingSpanID || recording {
		t.Fatalf("handler context %v (recording %v) lost the event's trace", got, recording)
	}
}
