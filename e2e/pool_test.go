package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/store"
)

// Helpers of the lifecycle tests (pool, janitor, hot update, delivery) carry
// the lc prefix: other e2e files define their own.

// lcInstance is the wire Instance (docs/contract.md §3.1).
type lcInstance struct {
	ChallengeID    string            `json:"challengeId"`
	SourceID       string            `json:"sourceId"`
	Since          time.Time         `json:"since"`
	LastRenew      time.Time         `json:"lastRenew"`
	Until          *time.Time        `json:"until"`
	ConnectionInfo string            `json:"connectionInfo"`
	Flags          []string          `json:"flags"`
	Additional     map[string]string `json:"additional"`
}

type lcChallenge struct {
	ID        string       `json:"id"`
	Scenario  string       `json:"scenario"`
	Instances []lcInstance `json:"instances"`
	Min       string       `json:"min"`
	Max       string       `json:"max"`
}

// lcDo sends a request and fails the test unless the status is want.
func lcDo(t testing.TB, env *testenv.Env, method, path, body string, want int) []byte {
	t.Helper()
	code, b := env.Do(t, method, path, body)
	if code != want {
		t.Fatalf("%s %s %s: %d %s (want %d)", method, path, body, code, b, want)
	}
	return b
}

func lcDecode[T any](t testing.TB, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

func lcCreateChallenge(t testing.TB, env *testenv.Env, body string) {
	t.Helper()
	lcDo(t, env, "POST", "/api/v1/challenge", body, http.StatusOK)
}

func lcCreateInstance(t testing.TB, env *testenv.Env, cid, sid string) lcInstance {
	t.Helper()
	b := lcDo(t, env, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":%q,"sourceId":%q}`, cid, sid), http.StatusOK)
	return lcDecode[lcInstance](t, b)
}

// lcCreateInstances creates one instance per source, all at once.
func lcCreateInstances(t testing.TB, env *testenv.Env, cid string, sources []string) map[string]lcInstance {
	t.Helper()
	var mu sync.Mutex
	out := map[string]lcInstance{}
	errs := make(chan string, len(sources))
	var wg sync.WaitGroup
	for _, sid := range sources {
		wg.Go(func() {
			code, b := env.Do(t, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":%q,"sourceId":%q}`, cid, sid))
			if code != http.StatusOK {
				errs <- fmt.Sprintf("create %s/%s: %d %s", cid, sid, code, b)
				return
			}
			var in lcInstance
			if err := json.Unmarshal(b, &in); err != nil {
				errs <- err.Error()
				return
			}
			mu.Lock()
			out[sid] = in
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// lcRecords reads the stored instances of a challenge, claimed and pooled
// (pooled ones sorted by identity: the order they are claimed in).
func lcRecords(t testing.TB, env *testenv.Env, cid string) (claimed, pooled []*store.Instance) {
	t.Helper()
	claimed, pooled, err := env.App.Store.Instances(context.Background(), cid)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(pooled, func(i, j int) bool { return pooled[i].Identity < pooled[j].Identity })
	return claimed, pooled
}

// lcStacks returns the stacks of the backend as a sorted "project/identity"
// list.
func lcStacks(t testing.TB, env *testenv.Env) []string {
	t.Helper()
	s := env.Stacks(t)
	sort.Strings(s)
	return s
}

// lcStacksOf is the sorted "project/identity" list of records.
func lcStacksOf(ins ...[]*store.Instance) []string {
	var out []string
	for _, l := range ins {
		for _, in := range l {
			out = append(out, in.Project+"/"+in.Identity)
		}
	}
	sort.Strings(out)
	return out
}

func lcWantStacks(t testing.TB, env *testenv.Env, want []string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	got := lcStacks(t, env)
	if got == nil {
		got = []string{}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("stacks in the backend:\n got  %v\n want %v", got, want)
	}
}

// The pool end to end (docs/contract.md §4.11): min=2 max=4 fills two pooled stacks
// by events; a create takes the lowest pooled instance in one transaction
// (its since kept, no deployment) and the pool refills; lowering max deletes
// the pooled surplus; with max reached a create deploys afresh; deleting the
// challenge destroys everything; an expired challenge gets no pool work, not
// from its creation, an update or the janitor.
func TestPoolLifecycle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")

	start := time.Now()
	lcCreateChallenge(t, env, `{"id":"pool","scenario":"`+ref+`","timeout":"600s","min":"2","max":"4"}`)
	t.Logf("create challenge (pool fills not awaited): %v", time.Since(start))
	env.Wait()
	// Pool work is one event, whatever min: the fill it starts runs until the
	// pool is full.
	if delivered, _ := env.Broker.Stats(); delivered != 1 {
		t.Fatalf("registration with min=2 sent %d events, want 1", delivered)
	}

	claimed, pooled := lcRecords(t, env, "pool")
	if len(claimed) != 0 || len(pooled) != 2 {
		t.Fatalf("after create: %d claimed, %d pooled; want 0, 2", len(claimed), len(pooled))
	}
	lcWantStacks(t, env, lcStacksOf(pooled))
	for _, in := range pooled {
		if !strings.Contains(in.ConnectionInfo, in.Identity) {
			t.Fatalf("pooled instance %s was not deployed: connection info %q", in.Identity, in.ConnectionInfo)
		}
	}
	// Pooled instances are invisible to the API.
	if c := lcDecode[lcChallenge](t, lcDo(t, env, "GET", "/api/v1/challenge/pool", "", http.StatusOK)); len(c.Instances) != 0 {
		t.Fatalf("pooled instances visible: %+v", c.Instances)
	}

	// A create is answered from the pool: the lowest identity, its since and
	// connection info, no new stack before the refill.
	next := pooled[0]
	start = time.Now()
	a := lcCreateInstance(t, env, "pool", "a")
	t.Logf("create answered from the pool: %v", time.Since(start))
	if !a.Since.Equal(next.Since) || a.ConnectionInfo != next.ConnectionInfo {
		t.Fatalf("claim: got since %v ci %q, want the pooled %s (since %v, ci %q)", a.Since, a.ConnectionInfo, next.Identity, next.Since, next.ConnectionInfo)
	}
	if a.Until == nil || a.Until.Before(start.Add(590*time.Second)) {
		t.Fatalf("claimed instance until %v: want now+600s", a.Until)
	}
	env.Wait()
	claimed, pooled = lcRecords(t, env, "pool")
	if len(claimed) != 1 || claimed[0].Identity != next.Identity || len(pooled) != 2 {
		t.Fatalf("after claim + refill: claimed %v, %d pooled; want [%s] and 2 pooled", lcStacksOf(claimed), len(pooled), next.Identity)
	}
	lcWantStacks(t, env, lcStacksOf(claimed, pooled))

	// max 4 → 2 with 1 claimed: room for 1 pooled, the surplus is destroyed.
	lcDo(t, env, "PATCH", "/api/v1/challenge/pool", `{"max":"2","updateMask":"max"}`, http.StatusOK)
	env.Wait()
	claimed, pooled = lcRecords(t, env, "pool")
	if len(claimed) != 1 || len(pooled) != 1 {
		t.Fatalf("after max=2: %d claimed, %d pooled; want 1, 1", len(claimed), len(pooled))
	}
	lcWantStacks(t, env, lcStacksOf(claimed, pooled))

	// The last pooled one goes to b; max is reached: no refill.
	last := pooled[0]
	b := lcCreateInstance(t, env, "pool", "b")
	if !b.Since.Equal(last.Since) || b.ConnectionInfo != last.ConnectionInfo {
		t.Fatalf("second claim not from the pool: %+v, pooled %s", b, last.Identity)
	}
	env.Wait()
	if claimed, pooled = lcRecords(t, env, "pool"); len(claimed) != 2 || len(pooled) != 0 {
		t.Fatalf("after second claim: %d claimed, %d pooled; want 2, 0 (max reached)", len(claimed), len(pooled))
	}

	// Pool empty, max reached: c gets a fresh deployment.
	start = time.Now()
	c := lcCreateInstance(t, env, "pool", "c")
	t.Logf("create with an empty pool (fresh deployment): %v", time.Since(start))
	if c.Since.Before(start) {
		t.Fatalf("fresh instance since %v is before the request (%v): taken from a pool?", c.Since, start)
	}
	env.Wait()
	claimed, pooled = lcRecords(t, env, "pool")
	if len(claimed) != 3 || len(pooled) != 0 {
		t.Fatalf("after fresh create: %d claimed, %d pooled; want 3, 0", len(claimed), len(pooled))
	}
	lcWantStacks(t, env, lcStacksOf(claimed))

	// Deleting the challenge destroys claimed and pooled instances alike.
	lcDo(t, env, "PATCH", "/api/v1/challenge/pool", `{"min":"1","max":"0","updateMask":"min,max"}`, http.StatusOK)
	env.Wait()
	if _, pooled = lcRecords(t, env, "pool"); len(pooled) != 1 {
		t.Fatalf("after min=1 max=0: %d pooled, want 1", len(pooled))
	}
	// A pooled instance lost without its refill (the fill event was lost):
	// the janitor brings the pool back to min.
	lost := pooled[0]
	sender, err := events.NewSender(env.URL+instance.EventsPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := events.New(context.Background(), "//challfn/test", events.TypeInstanceDelete, events.InstanceDelete{ChallengeID: "pool", Identity: lost.Identity})
	if err := sender.Send(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	if _, pooled = lcRecords(t, env, "pool"); len(pooled) != 0 {
		t.Fatalf("pooled instance not deleted: %v", lcStacksOf(pooled))
	}
	env.Janitor(t)
	claimed, pooled = lcRecords(t, env, "pool")
	if len(pooled) != 1 || pooled[0].Identity == lost.Identity {
		t.Fatalf("janitor did not refill the pool: %v", lcStacksOf(pooled))
	}
	lcWantStacks(t, env, lcStacksOf(claimed, pooled))

	lcDo(t, env, "DELETE", "/api/v1/challenge/pool", "", http.StatusOK)
	env.Wait()
	lcWantStacks(t, env, nil)
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("keys left after deleting the challenge: %v", k)
	}

	// An expired challenge: no fill at creation, at an update of its
	// bounds, nor from the janitor.
	past := time.Now().Add(-time.Minute).UTC().Format(time.RFC3339)
	lcCreateChallenge(t, env, `{"id":"pool-expired","scenario":"`+ref+`","until":"`+past+`","min":"2"}`)
	lcDo(t, env, "PATCH", "/api/v1/challenge/pool-expired", `{"min":"3","updateMask":"min"}`, http.StatusOK)
	env.Wait()
	env.Janitor(t)
	if claimed, pooled = lcRecords(t, env, "pool-expired"); len(claimed)+len(pooled) != 0 {
		t.Fatalf("expired challenge got instances: %v %v", lcStacksOf(claimed), lcStacksOf(pooled))
	}
	lcWantStacks(t, env, nil)
	if delivered, dropped := env.Broker.Stats(); dropped != 0 {
		t.Fatalf("broker dropped %d events (%d delivered)", dropped, delivered)
	}
}
