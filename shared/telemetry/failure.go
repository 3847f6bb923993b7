package telemetry

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
)

// Every failure must say why in the server log. The business layer logs its failures
// with their cause where it knows them; the HTTP and CloudEvent wrappers of this package
// make sure nothing fails silently: a request answered 5xx, or an event whose handling
// failed, without any ERROR line logged under its context gets one here.

// failureMark records that an ERROR line was logged under a request's context.
type failureMark struct{ logged atomic.Bool }

type failureKey struct{}

// withFailureMark returns ctx with a mark, the one already there if any: an event
// delivered over HTTP (a Pub/Sub push) is one failure, explained once.
func withFailureMark(ctx context.Context) (context.Context, *failureMark) {
	if m, ok := ctx.Value(failureKey{}).(*failureMark); ok {
		return ctx, m
	}
	m := &failureMark{}
	return context.WithValue(ctx, failureKey{}, m), m
}

// noteLogged is called by the log handler for every record: an ERROR one marks the
// request it belongs to.
func noteLogged(ctx context.Context, l slog.Level) {
	if l < slog.LevelError || ctx == nil {
		return
	}
	if m, ok := ctx.Value(failureKey{}).(*failureMark); ok {
		m.logged.Store(true)
	}
}

// statusWriter remembers the status of a response passed straight through (telemetry
// off: nothing is buffered).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// logUnexplained writes the line of a 5xx answer that nobody explained.
func (t *Telemetry) logUnexplained(ctx context.Context, m *failureMark, r *http.Request, route string, status int) {
	// 501 answers a method no route has (grpc-gateway's choice): the
	// client's mistake, not a failure.
	if status < 500 || status == http.StatusNotImplemented || m.logged.Load() || isCloudEvent(r) {
		return
	}
	t.log.ErrorContext(ctx, "request failed", "method", r.Method, "route", route, "status", status)
}

// isCloudEvent tells an event delivered in the CloudEvents HTTP binding: the SDK that
// decodes it hands the handler a context of its own, so the request's mark is not
// seen there; CloudEvent (the handler's wrapper) explains its failures instead.
func isCloudEvent(r *http.Request) bool {
	return len(r.Header["Ce-Id"]) > 0 || strings.HasPrefix(r.Header.Get("Content-Type"), "application/cloudevents")
}
