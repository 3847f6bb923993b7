package telemetry

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.opentelemetry.io/otel/trace"
)

// TestEveryFailureIsLogged: a 5xx answer or a failed event that its handler did not
// explain gets one ERROR line with the trace id; one the handler explained gets none more.
// Without any OTLP endpoint, every request still has a trace id.
func TestEveryFailureIsLogged(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"} {
		t.Setenv(k, "")
	}
	for _, tc := range []struct {
		name      string
		status    int
		handlerLn bool // the handler logs an ERROR itself
		wantLines int
	}{
		{"500 unexplained", 500, false, 1},
		{"503 unexplained", 503, false, 1},
		{"500 explained", 500, true, 1},
		{"400", 400, false, 0},
		{"200", 200, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(NewLogHandler(&buf, LogOptions{}))
			tel, err := Setup(context.Background(), "test", "v0", WithLogger(log), WithoutGlobal())
			if err != nil {
				t.Fatal(err)
			}
			var traceID trace.TraceID
			h := tel.Handler("test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				traceID = trace.SpanContextFromContext(r.Context()).TraceID()
				if tc.handlerLn {
					log.ErrorContext(r.Context(), "deployment failed", "error", "boom")
				}
				w.WriteHeader(tc.status)
			}))
			h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))
			if !traceID.IsValid() {
				t.Fatal("no trace id without an OTLP endpoint")
			}
			lines := strings.Count(buf.String(), `"level":"ERROR"`)
			if lines != tc.wantLines || lines > 0 && !strings.Contains(buf.String(), traceID.String()) {
				t.Fatalf("%d ERROR lines, want %d with trace %s:\n%s", lines, tc.wantLines, traceID, buf.String())
			}
		})
	}

	t.Run("event", func(t *testing.T) {
		var buf bytes.Buffer
		tel, err := Setup(context.Background(), "test", "v0", WithLogger(slog.New(NewLogHandler(&buf, LogOptions{}))),
			WithoutGlobal())
		if err != nil {
			t.Fatal(err)
		}
		fn := tel.CloudEvent(func(context.Context, cloudevents.Event) error { return errors.New("etcd is gone") })
		if err := fn(context.Background(), newEvent("io.challfn.pool.fill")); err == nil {
			t.Fatal("error lost")
		}
		if !strings.Contains(buf.String(), `"msg":"event handling failed"`) || !strings.Contains(buf.String(), "etcd is gone") ||
			!strings.Contains(buf.String(), `"trace_id"`) {
			t.Fatalf("log: %s", buf.String())
		}
	})
}
