package telemetry

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
)

// propagator is built once: the middleware runs it on every request.
var propagator = Propagator()

// Handler wraps h with Default(), resolved per request, so a function can
// register its handler in init() before main calls Setup.
func Handler(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		Default().serveHTTP(name, h, w, r)
	})
}

// HandlerFunc is Handler for the signature functions.HTTP takes.
func HandlerFunc(name string, f func(http.ResponseWriter, *http.Request)) func(http.ResponseWriter, *http.Request) {
	h := http.HandlerFunc(f)
	return func(w http.ResponseWriter, r *http.Request) { Default().serveHTTP(name, h, w, r) }
}

// Handler wraps h with a server span continuing the caller's traceparent, the
// http.server.request.duration histogram, and a flush of traces and metrics
// before the client can see the end of the response:
//
//   - unary responses are buffered until the flush is done, then written;
//   - streaming responses (the handler calls Flush, e.g. NDJSON) go out as they
//     are written; the telemetry flush happens after the handler's last write,
//     before the terminating chunk.
//
// The span is named "METHOD route", where route is the pattern the
// http.ServeMux inside h matched (Go 1.22+ records it on the request), else
// name. A status >= 500 marks the span as an error; RecordError adds details.
// With telemetry disabled, only the incoming trace context is propagated
// (for log correlation and outgoing events), nothing is buffered.
func (t *Telemetry) Handler(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.serveHTTP(name, h, w, r) })
}

func (t *Telemetry) serveHTTP(name string, h http.Handler, w http.ResponseWriter, r *http.Request) {
	parent := r.Context()
	ctx := parent
	// Canonical keys looked up directly: Header.Get would allocate to
	// canonicalize "traceparent" on every request, even without the header.
	if len(r.Header["Traceparent"]) > 0 || len(r.Header["Baggage"]) > 0 {
		ctx = propagator.Extract(parent, propagation.HeaderCarrier(r.Header))
	}
	ctx, mark := withFailureMark(ctx)
	if t.sdkTP == nil && t.sdkMP == nil {
		// Nothing recorded nor buffered; the span (not recorded) still gives the
		// request a trace id for its log lines and error messages.
		ctx, span := t.tracer.Start(ctx, r.Method+" "+name, trace.WithSpanKind(trace.SpanKindServer))
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r.WithContext(ctx))
		span.End()
		t.logUnexplained(ctx, mark, r, routeOrName(r.Pattern, name), sw.code())
		return
	}

	start := time.Now()
	ctx, span := t.tracer.Start(ctx, r.Method+" "+name,
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(r.Method),
			semconv.URLPath(r.URL.Path),
			semconv.URLScheme(scheme(r)),
			semconv.UserAgentOriginal(r.UserAgent()),
		))
	r = r.WithContext(ctx)
	bw := &bufferedWriter{w: w}

	finished := false
	defer func() {
		if finished {
			return
		}
		// The handler panicked: record it, export, and let the panic go on to
		// the server (which logs it and drops the connection).
		rec := recover()
		span.SetStatus(codes.Error, "panic")
		span.SetAttributes(attribute.String("exception.message", panicText(rec)))
		span.End()
		t.Flush(ctx)
		panic(rec)
	}()
	h.ServeHTTP(bw, r)
	finished = true

	route := name
	if p := routeOf(r.Pattern); p != "" {
		route = p
		span.SetName(r.Method + " " + p)
	}
	status := bw.statusCode()
	span.SetAttributes(semconv.HTTPRoute(route), semconv.HTTPResponseStatusCode(status))
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
	if t.sdkMP != nil {
		t.metrics.recordHTTP(ctx, time.Since(start), metric.WithAttributes(
			semconv.HTTPRequestMethodKey.String(r.Method),
			semconv.HTTPRoute(route),
			semconv.HTTPResponseStatusCode(status)))
	}
	span.End()
	t.logUnexplained(ctx, mark, r, route, status)

	if bw.streaming {
		// Deliver what the handler wrote; only the end of the stream waits.
		bw.flushUnderlying()
	}
	t.Flush(ctx)
	if !bw.streaming {
		bw.commit()
	}
}

// RecordError marks the span in ctx as failed with err (no-op for nil err or
// no recording span).
func RecordError(ctx context.Context, err error) {
	if err == nil {
		return
	}
	span := trace.SpanFromContext(ctx)
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

// routeOrName is the route of pattern, or name when the mux matched none.
func routeOrName(pattern, name string) string {
	if p := routeOf(pattern); p != "" {
		return p
	}
	return name
}

// routeOf turns a ServeMux pattern "[METHOD ][HOST]/PATH" into "/PATH".
func routeOf(pattern string) string {
	if pattern == "" {
		return ""
	}
	if i := strings.IndexByte(pattern, ' '); i >= 0 {
		pattern = strings.TrimLeft(pattern[i+1:], " \t")
	}
	if i := strings.IndexByte(pattern, '/'); i > 0 {
		pattern = pattern[i:]
	}
	return pattern
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func panicText(v any) string {
	switch x := v.(type) {
	case error:
		return x.Error()
	case string:
		return x
	default:
		return "panic"
	}
}

// bufferedWriter holds a unary response until the telemetry flush is done,
// and switches to pass-through the first time the handler flushes.
type bufferedWriter struct {
	w           http.ResponseWriter
	status      int
	wroteHeader bool
	streaming   bool
	buf         bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.w.Header() }

func (b *bufferedWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		b.w.WriteHeader(code) // informational responses are not the response
		return
	}
	if b.wroteHeader {
		return
	}
	b.wroteHeader = true
	b.status = code
	if b.streaming {
		b.w.WriteHeader(code)
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	if !b.wroteHeader {
		b.WriteHeader(http.StatusOK)
	}
	if b.streaming {
		return b.w.Write(p)
	}
	return b.buf.Write(p)
}

// Flush switches to streaming: the handler wants the client to see what it
// wrote so far.
func (b *bufferedWriter) Flush() { _ = b.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (b *bufferedWriter) FlushError() error {
	if !b.streaming {
		if !b.wroteHeader {
			b.WriteHeader(http.StatusOK)
		}
		b.streaming = true
		b.w.WriteHeader(b.status)
		if b.buf.Len() > 0 {
			if _, err := b.w.Write(b.buf.Bytes()); err != nil {
				return err
			}
			b.buf = bytes.Buffer{}
		}
	}
	return http.NewResponseController(b.w).Flush()
}

// Unwrap lets http.ResponseController reach the connection for deadlines.
func (b *bufferedWriter) Unwrap() http.ResponseWriter { return b.w }

func (b *bufferedWriter) statusCode() int {
	if !b.wroteHeader {
		return http.StatusOK
	}
	return b.status
}

func (b *bufferedWriter) flushUnderlying() { _ = http.NewResponseController(b.w).Flush() }

// commit writes the buffered unary response.
func (b *bufferedWriter) commit() {
	if !b.wroteHeader {
		// The handler wrote nothing: let net/http send its implicit 200.
		return
	}
	if n := b.buf.Len(); n > 0 && b.w.Header().Get("Content-Length") == "" {
		b.w.Header().Set("Content-Length", strconv.Itoa(n))
	}
	b.w.WriteHeader(b.status)
	if b.buf.Len() > 0 {
		_, _ = b.w.Write(b.buf.Bytes())
	}
}
