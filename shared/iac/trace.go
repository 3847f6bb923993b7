package iac

import (
	"context"
	"errors"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto/events"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/challfn/challfn/shared/telemetry"
)

// startOp starts the span of one engine operation ("pulumi.up",
// "pulumi.destroy", "pulumi.preview"): one CLI process, the bulk of an
// instance request's time.
func (ws *opWorkspace) startOp(ctx context.Context, op string) (context.Context, trace.Span) {
	return telemetry.Start(ctx, "pulumi."+op, trace.WithAttributes(
		attribute.String("pulumi.operation", op),
		attribute.String("pulumi.project", ws.project),
		attribute.String("pulumi.stack", ws.stack),
	))
}

// endOp ends span with the engine's resource counts, read from the event
// log's summary ("pulumi.resources.create": 2, ".same": 1...), and err.
func endOp(span trace.Span, eventLog string, err error) {
	if span.IsRecording() {
		_ = readEvents(eventLog, "summaryEvent", func(ev events.EngineEvent) {
			if ev.SummaryEvent == nil {
				return
			}
			total := 0
			for op, n := range ev.SummaryEvent.ResourceChanges {
				span.SetAttributes(attribute.Int("pulumi.resources."+string(op), n))
				total += n
			}
			span.SetAttributes(attribute.Int("pulumi.resources.total", total))
		})
		if err != nil {
			span.RecordError(err)
			msg := err.Error()
			var oe *OpError
			if errors.As(err, &oe) && oe.Summary != "" {
				msg = oe.Summary
			}
			span.SetStatus(codes.Error, strings.SplitN(msg, "\n", 2)[0])
		}
	}
	span.End()
}
