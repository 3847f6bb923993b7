package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/iac"
)

// BenchmarkHotUpdate50: a hot update of 50 claimed instances (scenario
// "additional", new additional values, update_in_place: one `pulumi up`
// each), as the PATCH fans it out through events and waits for it, against
// the same 50 updates run one by one through the engine. Reported: both wall
// times in seconds. The fan-out's parallelism is the broker's (8 deliveries
// in flight, as testenv configures it) on this machine's cores.
func BenchmarkHotUpdate50(b *testing.B) {
	const n = 50
	env := testenv.Start(b, testenv.Options{})
	ref := env.Scenario(b, "additional")
	lcDo(b, env, "POST", "/api/v1/challenge", `{"id":"hu","scenario":"`+ref+`","timeout":"3600s"}`, http.StatusOK)
	var sources []string
	for s := range n {
		sources = append(sources, fmt.Sprintf("s%02d", s))
	}
	lcCreateInstances(b, env, "hu", sources)
	claimed, _ := lcRecords(b, env, "hu")
	sc, err := env.App.Scenarios.Get(context.Background(), claimed[0].Digest)
	if err != nil {
		b.Fatal(err)
	}
	var fanout, sequential time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		res := lcDecode[lcChallenge](b, lcDo(b, env, "PATCH", "/api/v1/challenge/hu",
			fmt.Sprintf(`{"additional":{"round":"p%d"},"updateMask":"additional","updateStrategy":"update_in_place"}`, i), http.StatusOK))
		fanout += time.Since(start)
		for _, in := range res.Instances {
			if !strings.HasSuffix(in.ConnectionInfo, fmt.Sprintf("?round=p%d", i)) {
				b.Fatalf("not updated: %+v", in)
			}
		}
		env.Wait()

		start = time.Now()
		for _, in := range claimed {
			if _, _, err := env.App.Engine.Update(context.Background(), sc.Program, sc.Program, iac.UpdateInPlace, in.Identity, map[string]string{"round": fmt.Sprintf("s%d", i)}); err != nil {
				b.Fatal(err)
			}
		}
		sequential += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(fanout.Seconds()/float64(b.N), "fanout-s")
	b.ReportMetric(sequential.Seconds()/float64(b.N), "sequential-s")
}
