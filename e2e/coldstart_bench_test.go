package e2e

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
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
	must(b, env.URL, "POST", "/api/v1/challenge", `{"id":"cold","scenario":"`+ref+`"}`, 200)
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
	b.ReportMetric(ms(median(ready)), "ready-ms/op")
	b.ReportMetric(ms(median(up)), "up-ms/op")
	b.Logf("cold instance: ready (etcd + engine + scenario download) median %s, up median %s, n=%d", median(ready), median(up), len(up))
}
