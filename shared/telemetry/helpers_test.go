package telemetry

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// newTestTelemetry builds a Telemetry exporting to in-memory sinks.
func newTestTelemetry(t testing.TB, opts ...Option) (*Telemetry, *tracetest.InMemoryExporter, *sdkmetric.ManualReader) {
	t.Helper()
	spans := tracetest.NewInMemoryExporter()
	reader := sdkmetric.NewManualReader()
	opts = append([]Option{WithSpanExporter(spans), WithMetricReader(reader), WithoutGlobal(), WithLogger(discardLogger())}, opts...)
	tel, err := Setup(context.Background(), "test-svc", "v0.0.1", opts...)
	if err != nil {
		t.Fatalf("Setup: %v", err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, spans, reader
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// collect returns the metrics currently held by reader.
func collect(t testing.TB, r sdkmetric.Reader) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	return rm
}

// findMetric returns the metric named name, or fails.
func findMetric(t testing.TB, rm metricdata.ResourceMetrics, name string) metricdata.Metrics {
	t.Helper()
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("metric %q not found", name)
	return metricdata.Metrics{}
}

func hasMetric(rm metricdata.ResourceMetrics, name string) bool {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return true
			}
		}
	}
	return false
}

// recordingSpanExporter notes that an export happened (after a delay, so that
// a response sent before the export would be seen first) and can be told to
// block until its context ends.
type recordingSpanExporter struct {
	exported atomic.Int64 // number of ExportSpans calls that completed
	spans    atomic.Int64
	block    atomic.Bool
	delay    func()
	mu       sync.Mutex
}

func (e *recordingSpanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if e.block.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	if e.delay != nil {
		e.delay()
	}
	e.spans.Add(int64(len(spans)))
	e.exported.Add(1)
	return nil
}

func (e *recordingSpanExporter) Shutdown(context.Context) error { return nil }

// recordingMetricExporter is the metric counterpart.
type recordingMetricExporter struct {
	exported atomic.Int64
	delay    func()
}

func (e *recordingMetricExporter) Temporality(k sdkmetric.InstrumentKind) metricdata.Temporality {
	return sdkmetric.DefaultTemporalitySelector(k)
}

func (e *recordingMetricExporter) Aggregation(k sdkmetric.InstrumentKind) sdkmetric.Aggregation {
	return sdkmetric.DefaultAggregationSelector(k)
}

func (e *recordingMetricExporter) Export(ctx context.Context, rm *metricdata.ResourceMetrics) error {
	if e.delay != nil {
		e.delay()
	}
	e.exported.Add(1)
	return nil
}

func (e *recordingMetricExporter) ForceFlush(context.Context) error { return nil }
func (e *recordingMetricExporter) Shutdown(context.Context) error   { return nil }
