package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// BenchmarkHandler measures the middleware around a small JSON handler, in
// process (httptest.ResponseRecorder), so the numbers are the middleware's.
//
//	go test -run '^$' -bench Handler -benchmem ./shared/telemetry
func BenchmarkHandler(b *testing.B) {
	mux := testMux()
	req := httptest.NewRequest(http.MethodGet, "/api/v1/challenge/c1", nil)
	req.Header.Set("traceparent", incomingParent)

	plain := httptest.NewRequest(http.MethodGet, "/api/v1/challenge/c1", nil)

	run := func(b *testing.B, h http.Handler) {
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
	}
	b.Run("bare", func(b *testing.B) { run(b, mux) })
	b.Run("disabled", func(b *testing.B) { run(b, Disabled().Handler("challenge", mux)) })
	b.Run("disabled-no-traceparent", func(b *testing.B) {
		h := Disabled().Handler("challenge", mux)
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(httptest.NewRecorder(), plain)
		}
	})
	b.Run("inmemory", func(b *testing.B) {
		spans := tracetest.NewInMemoryExporter()
		tel, _, _ := newTestTelemetry(b, WithSpanExporter(spans))
		h := tel.Handler("challenge", mux)
		run(b, h)
		b.StopTimer()
		if len(spans.GetSpans()) == 0 {
			b.Fatal("no spans exported")
		}
	})
}
