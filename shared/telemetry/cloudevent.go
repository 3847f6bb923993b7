package telemetry

import (
	"context"
	"errors"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/extensions"
	"github.com/cloudevents/sdk-go/v2/protocol"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
)

// CloudEventFunc is the signature functions.CloudEvent takes.
type CloudEventFunc = func(context.Context, cloudevents.Event) error

// The CloudEvents distributed-tracing extension carries exactly the W3C
// traceparent/tracestate pair (no baggage), so only TraceContext is used.
var eventPropagator = propagation.TraceContext{}

// eventCarrier adapts an event's extensions to a TextMapCarrier. We use our
// own rather than sdk-go's because its Inject takes the event by value and
// loses the extension when the event had none yet.
type eventCarrier struct{ e *cloudevents.Event }

func (c eventCarrier) Get(key string) string {
	v, ok := c.e.Extensions()[key]
	if !ok {
		return ""
	}
	s, err := types.ToString(v)
	if err != nil {
		return ""
	}
	return s
}

func (c eventCarrier) Set(key, value string) {
	if value == "" {
		return
	}
	c.e.SetExtension(key, value)
}

func (c eventCarrier) Keys() []string {
	return []string{extensions.TraceParentExtension, extensions.TraceStateExtension}
}

// InjectEvent writes the trace context of ctx into e's distributed-tracing
// extension (traceparent, tracestate), replacing any previous value. Call it
// on every event sent.
func InjectEvent(ctx context.Context, e *cloudevents.Event) {
	eventPropagator.Inject(ctx, eventCarrier{e})
}

// ExtractEvent returns ctx with the remote span context found in e's
// distributed-tracing extension; ctx unchanged when e has none or it is invalid.
func ExtractEvent(ctx context.Context, e cloudevents.Event) context.Context {
	if _, ok := e.Extensions()[extensions.TraceParentExtension]; !ok {
		return ctx
	}
	return eventPropagator.Extract(ctx, eventCarrier{&e})
}

// StartProducer starts a producer span "send <type>" for an event about to be
// sent and injects its context into e. End the span after the send.
func StartProducer(ctx context.Context, e *cloudevents.Event) (context.Context, trace.Span) {
	ctx, span := Default().tracer.Start(ctx, "send "+e.Type(),
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(eventAttrs(e)...))
	InjectEvent(ctx, e)
	return ctx, span
}

// CloudEvent wraps fn with Default(), resolved per event, so functions may
// register in init() before main calls Setup.
func CloudEvent(fn CloudEventFunc) CloudEventFunc {
	return func(ctx context.Context, e cloudevents.Event) error { return Default().handleEvent(ctx, e, fn) }
}

// CloudEvent wraps fn: the parent context comes from the event's tracing
// extension (a funcframework CloudEvent function never sees the HTTP
// traceparent header), a consumer span "process <type>" covers fn, the
// challfn.events.handled counter records the outcome, and traces and metrics
// are flushed before fn's result goes back to the platform.
//
// Outcomes: nil, an ACK or a 2xx cehttp result → ok; a cehttp result with a 4xx status →
// rejected (the platform will not retry; span not marked as error); anything
// else → error (retried).
func (t *Telemetry) CloudEvent(fn CloudEventFunc) CloudEventFunc {
	return func(ctx context.Context, e cloudevents.Event) error { return t.handleEvent(ctx, e, fn) }
}

func (t *Telemetry) handleEvent(ctx context.Context, e cloudevents.Event, fn CloudEventFunc) (err error) {
	ctx = ExtractEvent(ctx, e)
	ctx, mark := withFailureMark(ctx)
	defer func() {
		if !mark.logged.Load() && eventOutcome(err) == OutcomeError {
			t.log.ErrorContext(ctx, "event handling failed", "type", e.Type(), "id", e.ID(), "error", err)
		}
	}()
	if !t.Enabled() {
		// Not recorded: the span only gives the event's work a trace id for its logs.
		var span trace.Span
		ctx, span = t.tracer.Start(ctx, "process "+e.Type(), trace.WithSpanKind(trace.SpanKindConsumer))
		defer span.End()
		return fn(ctx, e)
	}
	ctx, span := t.tracer.Start(ctx, "process "+e.Type(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(eventAttrs(&e)...))
	finished := false
	defer func() {
		if finished {
			return
		}
		rec := recover()
		span.SetStatus(codes.Error, "panic")
		span.End()
		t.metrics.RecordEvent(ctx, e.Type(), OutcomeError)
		t.Flush(ctx)
		panic(rec)
	}()
	err = fn(ctx, e)
	finished = true

	outcome := eventOutcome(err)
	switch outcome {
	case OutcomeError:
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	case OutcomeRejected:
		span.RecordError(err)
	}
	t.metrics.RecordEvent(ctx, e.Type(), outcome)
	span.End()
	t.Flush(ctx)
	return err
}

func eventOutcome(err error) string {
	if err == nil || protocol.IsACK(err) {
		return OutcomeOK
	}
	var res *cehttp.Result
	if errors.As(err, &res) {
		switch {
		case res.StatusCode >= 200 && res.StatusCode < 300:
			return OutcomeOK
		case res.StatusCode >= 400 && res.StatusCode < 500:
			return OutcomeRejected
		}
	}
	return OutcomeError
}

func eventAttrs(e *cloudevents.Event) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.CloudEventsEventID(e.ID()),
		semconv.CloudEventsEventSource(e.Source()),
		semconv.CloudEventsEventType(e.Type()),
	}
	if s := e.Subject(); s != "" {
		attrs = append(attrs, semconv.CloudEventsEventSubject(s))
	}
	return attrs
}
