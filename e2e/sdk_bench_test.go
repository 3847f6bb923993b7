package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

// BenchmarkFirstInstance: the time from a challenge's registration to its first
// instance, for each scenario shape a ChallMaker writes by default (the
// scenarios of TestSDKScenarios). Each iteration pushes a copy of the scenario
// made new by a comment, as a ChallMaker pushing a new version would, so that
// registration pulls, compiles (warm Go caches) and previews it; then one
// instance is created (no pool). Reported: the median over the iterations
// (run with -benchtime 5x for the median of 5), and its split.
func BenchmarkFirstInstance(b *testing.B) {
	env := testenv.Start(b, testenv.Options{})
	for _, shape := range sdkShapes {
		b.Run(shape.scenario, func(b *testing.B) {
			var total, reg, create []time.Duration
			n := 0
			for b.Loop() {
				n++
				dir := b.TempDir()
				if err := os.CopyFS(dir, os.DirFS(filepath.Join(testenv.Root(), "scenarios", shape.scenario))); err != nil {
					b.Fatal(err)
				}
				f, err := os.OpenFile(filepath.Join(dir, "main.go"), os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					b.Fatal(err)
				}
				fmt.Fprintf(f, "\n// version %d of %d\n", n, time.Now().UnixNano())
				f.Close()
				ref := env.PushDir(b, dir, fmt.Sprintf("%s-v%d", shape.scenario, n))
				cid := fmt.Sprintf("first-%s-%d", shape.scenario, n)
				start := time.Now()
				r := ctDo(b, env.URL, "POST", "/api/v1/challenge", `{"id":"`+cid+`","scenario":"`+ref+`","additional":{"host":"ctf.example"}}`)
				if r.Status != 200 {
					b.Fatalf("register: %d %s", r.Status, r.Body)
				}
				registered := time.Now()
				r = ctDo(b, env.URL, "POST", "/api/v1/instance", `{"challengeId":"`+cid+`","sourceId":"p"}`)
				if r.Status != 200 {
					b.Fatalf("create: %d %s", r.Status, r.Body)
				}
				shape.check(b, "first instance", r.Body)
				end := time.Now()
				total, reg, create = append(total, end.Sub(start)), append(reg, registered.Sub(start)), append(create, end.Sub(registered))
				b.StopTimer()
				ctDo(b, env.URL, "DELETE", "/api/v1/challenge/"+cid, "")
				b.StartTimer()
			}
			b.ReportMetric(median(total).Seconds(), "median-s")
			b.ReportMetric(median(reg).Seconds(), "register-s")
			b.ReportMetric(median(create).Seconds(), "create-s")
		})
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
