package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/localstack"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/telemetry"
)

// BenchmarkMonitoringRetrieve measures what telemetry costs a request: the
// retrieve route of two instance functions (child processes) on the same
// etcd, one exporting to the real Jaeger (flush before each response), one
// without an endpoint, interleaved in the same run. It reports p50/p99 of
// each, and p50/p99 of Telemetry.Flush itself (a server span and two child
// spans plus the metrics, to the same Jaeger).
//
//	CHALLFN_E2E_MONITORING=1 go test ./e2e -run '^$' -bench BenchmarkMonitoringRetrieve -benchtime 400x
func BenchmarkMonitoringRetrieve(b *testing.B) {
	if os.Getenv("CHALLFN_E2E_MONITORING") != "1" {
		b.Skip("set CHALLFN_E2E_MONITORING=1")
	}
	root := testenv.Root()
	tmp := b.TempDir()
	stack, err := localstack.Start(context.Background(), localstack.Options{Root: root, Dir: filepath.Join(tmp, "stack"), FreePorts: true})
	if err != nil {
		b.Fatal(err)
	}
	defer stack.Close()
	env := testenv.Start(b, testenv.Options{Events: testenv.Inline})
	ref := env.Scenario(b, "outputs")
	must(b, env.URL, "POST", "/api/v1/challenge", `{"id":"bench","scenario":"`+ref+`"}`, 200)
	must(b, env.URL, "POST", "/api/v1/instance", `{"challengeId":"bench","sourceId":"1"}`, 200)
	common := functionEnv(env)
	on := startMonitoringFunction(b, tmp, "instance", append(slices.Clone(common), "OTEL_EXPORTER_OTLP_ENDPOINT="+stack.OTLP, "CACHE_DIR="+filepath.Join(tmp, "c1")))
	off := startMonitoringFunction(b, tmp, "instance", append(slices.Clone(common), "CACHE_DIR="+filepath.Join(tmp, "c2")))

	get := func(u string) time.Duration {
		start := time.Now()
		resp, err := http.Get(u + "/api/v1/instance/bench/1")
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("retrieve: %d", resp.StatusCode)
		}
		return time.Since(start)
	}
	for range 20 { // warm up: App built, connections open, counts read once
		get(on.URL)
		get(off.URL)
	}

	// The flush alone, in this process, to the same Jaeger: the spans of a
	// retrieve (server span, etcd Range) and the metrics.
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", stack.OTLP)
	tel, err := telemetry.Setup(context.Background(), "bench-flush", "v0", telemetry.WithoutGlobal())
	if err != nil {
		b.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	flush := func() time.Duration {
		ctx, span := tel.Tracer().Start(context.Background(), "GET /api/v1/instance/{}/{}")
		_, child := tel.Tracer().Start(ctx, "etcd Range")
		child.End()
		span.End()
		start := time.Now()
		tel.Flush(ctx)
		return time.Since(start)
	}

	var dOn, dOff, dFlush []time.Duration
	b.ResetTimer()
	for range b.N {
		dOn = append(dOn, get(on.URL))
		dOff = append(dOff, get(off.URL))
		dFlush = append(dFlush, flush())
	}
	b.StopTimer()
	b.ReportMetric(float64(quantile(dOn, 0.50).Microseconds()), "p50-export-µs")
	b.ReportMetric(float64(quantile(dOn, 0.99).Microseconds()), "p99-export-µs")
	b.ReportMetric(float64(quantile(dOff, 0.50).Microseconds()), "p50-off-µs")
	b.ReportMetric(float64(quantile(dOff, 0.99).Microseconds()), "p99-off-µs")
	b.ReportMetric(float64(quantile(dFlush, 0.50).Microseconds()), "p50-flush-µs")
	b.ReportMetric(float64(quantile(dFlush, 0.99).Microseconds()), "p99-flush-µs")
}
