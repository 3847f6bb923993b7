package e2e

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/store"
)

// The janitor end to end (docs/contract.md §5): expiry of claimed instances (record
// and stack), renewal, a single run at a time, and the repair of stacks that
// no record knows. One environment; the orphan grace is 1 s so that two runs
// a second apart repair a leak.
func TestJanitor(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Env: map[string]string{"JANITOR_ORPHAN_GRACE": "1s"}})
	ref := env.Scenario(t, "outputs")

	t.Run("expiry and renewal", func(t *testing.T) {
		// 6 s timeout: B is renewed 2 s after its creation, so when the
		// janitor runs (both original untils passed) B still has ~2 s left.
		lcCreateChallenge(t, env, `{"id":"exp","scenario":"`+ref+`","timeout":"6s"}`)
		ins := lcCreateInstances(t, env, "exp", []string{"a", "b"})
		a, b := ins["a"], ins["b"]
		time.Sleep(time.Until(b.Since.Add(2 * time.Second)))
		renewed := lcDecode[lcInstance](t, lcDo(t, env, "PATCH", "/api/v1/instance/exp/b", "", http.StatusOK))
		if !renewed.Until.After(*b.Until) {
			t.Fatalf("renew did not push until: %v → %v", b.Until, renewed.Until)
		}
		claimed, _ := lcRecords(t, env, "exp")
		lcWantStacks(t, env, lcStacksOf(claimed))
		var aIdentity string
		for _, in := range claimed {
			if in.SourceID == "a" {
				aIdentity = in.Identity
			}
		}

		latest := *a.Until
		if b.Until.After(latest) {
			latest = *b.Until
		}
		time.Sleep(time.Until(latest.Add(300 * time.Millisecond)))
		if time.Now().After(renewed.Until.Add(-500 * time.Millisecond)) {
			t.Fatalf("the machine is too slow for this test: the renewed until (%v) is about to pass", renewed.Until)
		}
		env.Janitor(t)

		if code, body := env.Do(t, "GET", "/api/v1/instance/exp/a", ""); code != http.StatusNotFound {
			t.Fatalf("expired instance still served: %d %s", code, body)
		}
		if _, err := env.App.Store.InstanceByIdentity(context.Background(), "exp", aIdentity); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired instance record: %v", err)
		}
		claimed, _ = lcRecords(t, env, "exp")
		if len(claimed) != 1 || claimed[0].SourceID != "b" {
			t.Fatalf("after the janitor: %v, want only b's", lcStacksOf(claimed))
		}
		lcWantStacks(t, env, lcStacksOf(claimed))
		lcDo(t, env, "GET", "/api/v1/instance/exp/b", "", http.StatusOK)
		lcDo(t, env, "DELETE", "/api/v1/challenge/exp", "", http.StatusOK)
		lcWantStacks(t, env, nil)
	})

	t.Run("one run at a time", func(t *testing.T) {
		lcCreateChallenge(t, env, `{"id":"exp2","scenario":"`+ref+`","timeout":"1s"}`)
		ins := lcCreateInstances(t, env, "exp2", []string{"a", "b", "c"})
		for _, in := range ins {
			time.Sleep(time.Until(in.Until.Add(100 * time.Millisecond)))
		}

		// Two runs of the manager at once: the first to get the etcd
		// try-lock lists the stacks only once the other returned, so the
		// runs overlap whatever the scheduling.
		other := make(chan struct{})
		var once sync.Once
		lister := blockingLister{StackLister: env.App.Engine, until: other}
		reports := make([]manager.JanitorReport, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				reports[i], errs[i] = env.App.Manager.Janitor(context.Background(), lister, time.Hour)
				once.Do(func() { close(other) })
			})
		}
		wg.Wait()
		env.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("janitor runs: %v, %v", errs[0], errs[1])
		}
		if reports[0].Skipped == reports[1].Skipped {
			t.Fatalf("want exactly one run skipped: %+v / %+v", reports[0], reports[1])
		}
		worked := reports[0]
		if worked.Skipped {
			worked = reports[1]
		}
		if worked.Expired != 3 {
			t.Fatalf("the working run expired %d instances, want 3: %+v", worked.Expired, worked)
		}
		if claimed, pooled := lcRecords(t, env, "exp2"); len(claimed)+len(pooled) != 0 {
			t.Fatalf("expired instances left: %v", lcStacksOf(claimed, pooled))
		}
		lcWantStacks(t, env, nil)

		// The same through the janitor function, as two scheduler ticks at
		// once: both succeed, and each expired instance gets exactly one
		// deletion event.
		ins = lcCreateInstances(t, env, "exp2", []string{"d", "e"})
		for _, in := range ins {
			time.Sleep(time.Until(in.Until.Add(100 * time.Millisecond)))
		}
		before, _ := env.Broker.Stats()
		s, err := events.NewSender(env.URL+allinone.JanitorPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			wg.Go(func() {
				ev, _ := events.New(context.Background(), "//challfn/test/scheduler", events.TypeKnativePing, map[string]string{})
				errs[i] = s.Send(context.Background(), ev)
			})
		}
		wg.Wait()
		env.Wait()
		if errs[0] != nil || errs[1] != nil {
			t.Fatalf("concurrent janitor ticks: %v, %v", errs[0], errs[1])
		}
		after, _ := env.Broker.Stats()
		if after-before != 2 {
			t.Fatalf("%d events delivered for 2 expired instances: a run did the work twice", after-before)
		}
		if claimed, _ := lcRecords(t, env, "exp2"); len(claimed) != 0 {
			t.Fatalf("expired instances left: %v", lcStacksOf(claimed))
		}
		lcWantStacks(t, env, nil)
		lcDo(t, env, "DELETE", "/api/v1/challenge/exp2", "", http.StatusOK)
	})

	t.Run("stack without record", func(t *testing.T) {
		// What a crash between the deployment and the commit leaves: a
		// stack, its reservation gone with the lease, no record. Next to it,
		// a live instance that must survive.
		lcCreateChallenge(t, env, `{"id":"repair","scenario":"`+ref+`","timeout":"600s"}`)
		live := lcCreateInstances(t, env, "repair", []string{"live"})["live"]
		c, err := env.App.Store.GetChallenge(context.Background(), "repair")
		if err != nil {
			t.Fatal(err)
		}
		sc, err := env.App.Scenarios.Get(context.Background(), c.Digest)
		if err != nil {
			t.Fatal(err)
		}
		leaked := identity.New()
		if _, err := env.App.Engine.Create(context.Background(), sc.Program, leaked, nil); err != nil {
			t.Fatal(err)
		}
		claimed, _ := lcRecords(t, env, "repair")
		want := lcStacksOf(claimed)
		withLeak := append(slices.Clone(want), sc.Program.Project+"/"+leaked)
		slices.Sort(withLeak)
		lcWantStacks(t, env, withLeak)

		env.Janitor(t) // first seen: a suspect only
		lcWantStacks(t, env, withLeak)
		time.Sleep(1100 * time.Millisecond)
		env.Janitor(t) // unknown for longer than the grace: destroyed
		lcWantStacks(t, env, want)
		got := lcDecode[lcInstance](t, lcDo(t, env, "GET", "/api/v1/instance/repair/live", "", http.StatusOK))
		if got.ConnectionInfo != live.ConnectionInfo {
			t.Fatalf("live instance changed: %+v", got)
		}
		lcDo(t, env, "DELETE", "/api/v1/challenge/repair", "", http.StatusOK)
		lcWantStacks(t, env, nil)
	})
}

// blockingLister lists stacks only once until is closed (or after 20 s).
type blockingLister struct {
	manager.StackLister
	until <-chan struct{}
}

func (b blockingLister) ListStacks(ctx context.Context) ([]iac.StackRef, error) {
	select {
	case <-b.until:
	case <-time.After(20 * time.Second):
	}
	return b.StackLister.ListStacks(ctx)
}
