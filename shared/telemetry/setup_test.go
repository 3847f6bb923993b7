package telemetry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

var otelEnv = []string{
	"OTEL_SDK_DISABLED", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
	"OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "K_SERVICE", "K_REVISION", "K_CONFIGURATION",
}

func clearOtelEnv(t *testing.T) {
	for _, k := range otelEnv {
		t.Setenv(k, "")
	}
}

func TestSetupSignalsFromEnv(t *testing.T) {
	// The endpoint is a closed loopback port: exporters are created lazily and
	// nothing is exported in this test.
	const ep = "http://127.0.0.1:1"
	tests := []struct {
		name            string
		env             map[string]string
		traces, metrics bool
	}{
		{"nothing configured", nil, false, false},
		{"base endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep}, true, true},
		{"traces only", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ep + "/v1/traces"}, true, false},
		{"metrics only", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": ep + "/v1/metrics"}, false, true},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_SDK_DISABLED": "true"}, false, false},
		{"traces exporter none", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": ep, "OTEL_TRACES_EXPORTER": "none"}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearOtelEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			tel, err := Setup(context.Background(), "svc", "v1", WithoutGlobal(), WithLogger(discardLogger()))
			if err != nil {
				t.Fatal(err)
			}
			defer tel.Shutdown(context.Background())
			if tel.TracingEnabled() != tt.traces || (tel.sdkMP != nil) != tt.metrics {
				t.Fatalf("traces %v metrics %v, want %v %v", tel.TracingEnabled(), tel.sdkMP != nil, tt.traces, tt.metrics)
			}
			if tel.Enabled() != (tt.traces || tt.metrics) {
				t.Fatalf("Enabled %v", tel.Enabled())
			}
		})
	}
}

func TestResourceAttributes(t *testing.T) {
	clearOtelEnv(t)
	t.Setenv("K_SERVICE", "challfn-instance")
	t.Setenv("K_REVISION", "challfn-instance-00003")
	t.Setenv("K_CONFIGURATION", "challfn-instance")
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=ctf-2026")

	a, _, _ := newTestTelemetry(t)
	b, _, _ := newTestTelemetry(t)
	attrs := resAttrs(a.Resource().Attributes())
	want := map[string]string{
		"service.name":                "test-svc",
		"service.version":             "v0.0.1",
		"faas.name":                   "challfn-instance",
		"faas.version":                "challfn-instance-00003",
		"knative.configuration.name":  "challfn-instance",
		"deployment.environment.name": "ctf-2026",
		"telemetry.sdk.language":      "go",
	}
	for k, v := range want {
		if attrs[k] != v {
			t.Errorf("%s = %q, want %q", k, attrs[k], v)
		}
	}
	if attrs["service.instance.id"] == "" || attrs["service.instance.id"] == resAttrs(b.Resource().Attributes())["service.instance.id"] {
		t.Errorf("service.instance.id %q not unique per instance", attrs["service.instance.id"])
	}
	if attrs["faas.instance"] != attrs["service.instance.id"] {
		t.Errorf("faas.instance %q", attrs["faas.instance"])
	}
	if _, ok := attrs["cloud.provider"]; ok {
		t.Error("GCP detector ran without being enabled")
	}

	t.Setenv("OTEL_SERVICE_NAME", "renamed")
	c, _, _ := newTestTelemetry(t)
	if got := resAttrs(c.Resource().Attributes())["service.name"]; got != "renamed" {
		t.Errorf("OTEL_SERVICE_NAME did not win: %q", got)
	}
}

func resAttrs(kvs []attribute.KeyValue) map[string]string { return attrMap(kvs) }

func TestFlushTimeoutConfig(t *testing.T) {
	clearOtelEnv(t)
	tel, _, _ := newTestTelemetry(t)
	if tel.FlushTimeout() != DefaultFlushTimeout {
		t.Fatalf("default flush timeout %v", tel.FlushTimeout())
	}
	tel, _, _ = newTestTelemetry(t, WithFlushTimeout(750*time.Millisecond))
	if tel.FlushTimeout() != 750*time.Millisecond {
		t.Fatalf("option ignored: %v", tel.FlushTimeout())
	}
}

func TestDefaultAndGlobals(t *testing.T) {
	SetDefault(nil)
	if Default().Enabled() {
		t.Fatal("Default() without Setup is enabled")
	}
	spans := tracetest.NewInMemoryExporter()
	tel, err := Setup(context.Background(), "global-svc", "", WithSpanExporter(spans), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer SetDefault(nil)
	defer tel.Shutdown(context.Background())
	if Default() != tel {
		t.Fatal("Setup did not install Default()")
	}
	// The package-level wrappers resolve Default() per request.
	srv := httptest.NewServer(Handler("challenge", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, span := Start(r.Context(), "child")
		span.End()
	})))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := len(spans.GetSpans()); n != 2 {
		t.Fatalf("%d spans, want server + child", n)
	}
}

func TestRunShutsDownOnSignal(t *testing.T) {
	se := &recordingSpanExporter{}
	tel, err := Setup(context.Background(), "run-svc", "", WithSpanExporter(se), WithoutGlobal(), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	err = Run(context.Background(), tel, func(ctx context.Context) error {
		_, span := tel.Tracer().Start(ctx, "pending at shutdown")
		span.End() // queued in the batcher, not flushed
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
			return err
		}
		<-ctx.Done()
		select {} // like funcframework.Start: never returns
	})
	if err != nil {
		t.Fatalf("Run after SIGTERM: %v", err)
	}
	if se.spans.Load() != 1 {
		t.Fatalf("%d spans exported at shutdown, want 1", se.spans.Load())
	}
}

func TestRunReturnsServeError(t *testing.T) {
	tel, _, _ := newTestTelemetry(t)
	boom := errors.New("listen tcp :8080: address already in use")
	if err := Run(context.Background(), tel, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want %v", err, boom)
	}
}
