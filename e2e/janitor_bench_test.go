package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/store"
)

// lcSeed writes nChall challenges of perChall claimed instances each straight
// into the store (no stacks): the records a janitor run reads. The scenario
// of every challenge is the registered "outputs" one; until is each
// instance's expiry. Reservation then commit, the path a real create takes.
func lcSeed(b *testing.B, env *testenv.Env, nChall, perChall int, until time.Time) {
	b.Helper()
	ctx := context.Background()
	ref := env.Scenario(b, "outputs")
	lcDo(b, env, "POST", "/api/v1/challenge", `{"id":"seed","scenario":"`+ref+`","timeout":"3600s"}`, http.StatusOK)
	proto, err := env.App.Store.GetChallenge(ctx, "seed")
	if err != nil {
		b.Fatal(err)
	}
	lease, err := env.Client.Grant(ctx, 3600)
	if err != nil {
		b.Fatal(err)
	}
	type job struct{ cid, sid string }
	jobs := make(chan job)
	var failed atomic.Value
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for j := range jobs {
				id := identity.New()
				if err := env.App.Store.Reserve(ctx, j.cid, j.sid, id, clientv3.LeaseID(lease.ID)); err != nil {
					failed.Store(err)
					continue
				}
				// until = last renewal + the challenge's timeout (3600 s).
				renewed := until.Add(-time.Hour)
				in := &store.Instance{ChallengeID: j.cid, Identity: id, SourceID: j.sid, Since: renewed, LastRenew: renewed,
					ConnectionInfo: "seeded " + id, Digest: proto.Digest, Project: proto.Project}
				if err := env.App.Store.CommitInstance(ctx, in); err != nil {
					failed.Store(err)
				}
			}
		})
	}
	for c := range nChall {
		cid := fmt.Sprintf("seed-%05d", c)
		ch := *proto
		ch.ID, ch.Rev = cid, 0
		if err := env.App.Store.CreateChallenge(ctx, &ch); err != nil {
			b.Fatal(err)
		}
		for s := range perChall {
			jobs <- job{cid, fmt.Sprintf("src-%05d", s)}
		}
	}
	close(jobs)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	n, err := env.App.Store.Count(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if n.Claimed != int64(nChall*perChall) {
		b.Fatalf("seeded %d claimed instances, want %d", n.Claimed, nChall*perChall)
	}
}

// BenchmarkJanitorNoop: one janitor run over 10 000 claimed instance records
// with nothing to do (none expired, pools at their bounds), in two shapes.
// "tick" is the janitor function as a scheduler fires it (HTTP CloudEvent,
// the whole run: etcd reads, pool reconciliation, the orphan check that lists
// the Pulumi backend's stacks); "sweep" is the manager's run without the
// backend listing, to separate the etcd part from the `pulumi stack ls`.
// Target: ≤ 1 s.
func BenchmarkJanitorNoop(b *testing.B) {
	for _, shape := range []struct{ chall, per int }{{100, 100}, {10000, 1}} {
		b.Run(fmt.Sprintf("%dx%d", shape.chall, shape.per), func(b *testing.B) {
			env := testenv.Start(b, testenv.Options{})
			lcSeed(b, env, shape.chall, shape.per, time.Now().Add(time.Hour))
			b.Run("tick", func(b *testing.B) {
				for b.Loop() {
					env.Janitor(b)
				}
			})
			b.Run("sweep", func(b *testing.B) {
				for b.Loop() {
					rep, err := env.App.Manager.Janitor(context.Background(), nil, time.Hour)
					if err != nil || rep.Expired+rep.PoolFills+rep.PoolShrinks+rep.Failures != 0 || rep.Skipped {
						b.Fatalf("no-op run: %+v %v", rep, err)
					}
				}
			})
		})
	}
}

// BenchmarkJanitorExpired: one janitor run over 1 000 expired claimed
// instances (10 challenges × 100, records written straight into the store).
// Measured: the janitor function's own part, from the scheduler's tick to its
// answer — the expiry index read, the challenge snapshot, the orphan check,
// and 1 000 deletion events handed to an event sink that acknowledges at once
// (as a Knative broker ingress or a Pub/Sub publish does). The deletions
// themselves (one `pulumi destroy` each, run by the instance function) are
// not in this figure.
func BenchmarkJanitorExpired(b *testing.B) {
	var received atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("ce-type") == "io.challfn.instance.delete" {
			received.Add(1)
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	env := testenv.Start(b, testenv.Options{Env: map[string]string{"EVENTS_SINK_URL": sink.URL}})
	lcSeed(b, env, 10, 100, time.Now().Add(-time.Minute))
	for b.Loop() {
		received.Store(0)
		env.Janitor(b)
		if got := received.Load(); got != 1000 {
			b.Fatalf("%d deletion events, want 1000", got)
		}
	}
}

// BenchmarkJanitorPoolCeiling: the janitor's memory for a challenge whose pool
// wants the most it may (min = POOL_MIN_LIMIT, no instance deployed yet), and
// for one stored before that limit existed with min = 2^62 (upstream took it,
// and a janitor that made one event per missing instance ran out of memory),
// against an empty store. Events go to a sink that acknowledges them: only
// the janitor's own run is measured. Figures: B/op, allocs/op, events/op.
func BenchmarkJanitorPoolCeiling(b *testing.B) {
	for _, shape := range []struct {
		name string
		min  int64
	}{{"empty", 0}, {"min=100", 100}, {"min=2^62", 1 << 62}} {
		b.Run(shape.name, func(b *testing.B) {
			var events atomic.Int64
			sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				events.Add(1)
				w.WriteHeader(http.StatusAccepted)
			}))
			defer sink.Close()
			env := testenv.Start(b, testenv.Options{Env: map[string]string{"EVENTS_SINK_URL": sink.URL}})
			ctx := context.Background()
			if shape.min > 0 {
				ref := env.Scenario(b, "outputs")
				lcDo(b, env, "POST", "/api/v1/challenge", `{"id":"ceiling","scenario":"`+ref+`","timeout":"3600s"}`, http.StatusOK)
				c, err := env.App.Store.GetChallenge(ctx, "ceiling")
				if err != nil {
					b.Fatal(err)
				}
				c.Min = shape.min // straight into the store: what an older version may have kept
				if err := env.App.Store.UpdateChallenge(ctx, c, nil); err != nil {
					b.Fatal(err)
				}
			}
			events.Store(0)
			b.ReportAllocs()
			for b.Loop() {
				rep, err := env.App.Manager.Janitor(ctx, nil, time.Hour)
				if err != nil || rep.Failures != 0 {
					b.Fatalf("janitor: %+v %v", rep, err)
				}
			}
			b.ReportMetric(float64(events.Load())/float64(b.N), "events/op")
		})
	}
}
