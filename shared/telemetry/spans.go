package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Start starts a span with challfn's tracer; a convenience for business code.
// The challenge id and identity recorded in ctx (WithChallenge, WithIdentity)
// become attributes of the span, so every step of a request can be found by
// them, not only the span that was current when they were set.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := Default().tracer.Start(ctx, name, opts...)
	if span.IsRecording() {
		setContextAttrs(ctx, span)
	}
	return ctx, span
}

// setContextAttrs copies the ids of ctx onto span (never the source id: it
// names a player, see EnvLogSourceID).
func setContextAttrs(ctx context.Context, span trace.Span) {
	if v := ChallengeFrom(ctx); v != "" {
		span.SetAttributes(attribute.String(LogChallengeID, v))
	}
	if v := IdentityFrom(ctx); v != "" {
		span.SetAttributes(attribute.String(LogIdentity, v))
	}
}

// Metrics returns Default()'s instruments.
func Metrics() *Instruments { return Default().metrics }
