// Package telemetry sets up OpenTelemetry for one function instance and holds
// what every function shares about it, one concern per file:
//
//   - setup.go, resource.go, run.go: tracer and meter providers exporting over
//     OTLP/HTTP, the resource naming the function, the shutdown on SIGTERM;
//   - flush.go: the flush before every response;
//   - middleware_http.go, middleware_grpc.go, middleware_cloudevent.go: server
//     spans, W3C propagation (HTTP headers and the CloudEvents tracing
//     extension) and request metrics for each transport;
//   - logging.go, logging_failure.go: the JSON slog handler with trace and
//     challenge fields, and the rule that every failure is logged once;
//   - metrics.go, counts.go, spans.go: challfn's instruments and spans.
//
// Configuration comes from the standard OTEL_* variables (read by the SDK) and
// from config.Process (flush timeout, GCP detector, log level). Without an
// OTLP endpoint the providers are no-ops and the middleware only propagates
// the incoming trace context, so telemetry costs nothing measurable.
package telemetry
