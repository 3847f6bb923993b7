package e2e

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/identity"
)

// BenchmarkColdInstanceDeploy measures what a brand-new function instance
// (empty local cache, new etcd client, new engine) spends before it can run
// the `up` of a registered scenario, and the `up` itself. Issue 2's target:
// ready in under 3 s, plus the up.
func BenchmarkColdInstanceDeploy(b *testing.B) {
	env := testenv.Start(b, testenv.Options{Events: testenv.Inline})
	ref := env.Scenario(b, "outputs")
	if code, body := env.Do(b, "POST", "/api/v1/challenge", `{"id":"cold","scenario":"`+ref+`"}`); code != 200 {
		b.Fatalf("create challenge: %d %s", code, body)
	}
	c, err := env.App.Store.GetChallenge(context.Background(), "cold")
	if err != nil {
		b.Fatal(err)
	}
	var ready, up []time.Duration
	for i := 0; i < b.N; i++ {
		cfg := env.App.Config
		cfg.CacheDir = filepath.Join(b.TempDir(), "cache") // a new instance has nothing local
		ctx := context.Background()
		start := time.Now()
		app, err := bootstrap.New(ctx, cfg, "cold", slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})))
		if err != nil {
			b.Fatal(err)
		}
		sc, err := app.Scenarios.Get(ctx, c.Digest)
		if err != nil {
			b.Fatal(err)
		}
		ready = append(ready, time.Since(start))
		id := identity.New()
		t := time.Now()
		if _, err := app.Engine.Create(ctx, sc.Program, id, nil); err != nil {
			b.Fatal(err)
		}
		up = append(up, time.Since(t))
		b.StopTimer()
		if err := app.Engine.DestroyStack(ctx, sc.Program.Project, id); err != nil {
			b.Fatal(err)
		}
		app.Close()
		b.StartTimer()
	}
	b.ReportMetric(coldMS(coldMedian(ready)), "ready-ms/op")
	b.ReportMetric(coldMS(coldMedian(up)), "up-ms/op")
	b.Logf("cold instance: ready (etcd + engine + scenario download) median %s, up median %s, n=%d", coldMedian(ready), coldMedian(up), len(up))
}

func coldMedian(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func coldMS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
