package manager_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/memstore"
	"github.com/challfn/challfn/shared/store"
)

var bg = context.Background()

func ptr[T any](v T) *T { return &v }

func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %s", reason)
	}
	if got := apierr.From(err).Reason(); got != reason {
		t.Fatalf("error %v (reason %q), want %s", err, got, reason)
	}
}

func wantCode(t *testing.T, err error, code apierr.Code) {
	t.Helper()
	if got := apierr.CodeOf(err); got != code {
		t.Fatalf("error %v: code %s, want %s", err, got, code)
	}
}

func (w *world) challenge(t *testing.T, id string, min, max int64) {
	t.Helper()
	if _, err := w.m.CreateChallenge(bg, &api.CreateChallengeRequest{ID: id, Scenario: "reg/" + id + ":v1",
		Timeout: ptr(time.Hour), Additional: map[string]string{"k": "v1"}, Min: min, Max: max}); err != nil {
		t.Fatal(err)
	}
	w.events.wait()
}

func (w *world) instance(t *testing.T, cid, sid string) *api.Instance {
	t.Helper()
	in, err := w.m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: cid, SourceID: sid})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func identityOf(in *api.Instance) string {
	id, _, _ := strings.Cut(strings.TrimPrefix(in.ConnectionInfo, "nc "), " ")
	return id
}

// records lists every instance record as identity, sorted.
func (w *world) records(t *testing.T) []string {
	t.Helper()
	all, err := w.st.AllChallenges(bg)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, v := range all {
		for _, in := range append(v.Claimed, v.Pooled...) {
			ids = append(ids, in.Identity)
		}
	}
	slices.Sort(ids)
	return ids
}

// consistent: a record exists exactly when its stack does.
func (w *world) consistent(t *testing.T) {
	t.Helper()
	w.events.wait()
	if recs, stacks := w.records(t), w.engine.identities(); !slices.Equal(recs, stacks) {
		t.Fatalf("records %v ≠ stacks %v", recs, stacks)
	}
}

func TestChallengeLifecycle(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	_, err := w.m.CreateChallenge(bg, &api.CreateChallengeRequest{ID: "c", Scenario: "reg/c:v1"})
	wantReason(t, err, apierr.ReasonChallengeAlreadyExists)
	for _, tc := range []struct {
		name   string
		req    api.CreateChallengeRequest
		reason string
	}{
		{"inverted bounds", api.CreateChallengeRequest{ID: "d", Scenario: "s", Min: 3, Max: 1}, apierr.ReasonChallengePoolerOOB},
		{"min over the ceiling", api.CreateChallengeRequest{ID: "d", Scenario: "s", Min: 101}, apierr.ReasonChallengePoolerOOB},
		{"zero timeout", api.CreateChallengeRequest{ID: "d", Scenario: "s", Timeout: ptr(time.Duration(0))}, apierr.ReasonInvalidArgument},
		{"until after 2200", api.CreateChallengeRequest{ID: "d", Scenario: "s", Until: ptr(time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC))}, apierr.ReasonInvalidArgument},
		{"additional too large", api.CreateChallengeRequest{ID: "d", Scenario: "s", Additional: map[string]string{"k": strings.Repeat("x", 70<<10)}}, apierr.ReasonInvalidArgument},
		{"empty id", api.CreateChallengeRequest{Scenario: "s"}, apierr.ReasonInvalidArgument},
		{"failing preview", api.CreateChallengeRequest{ID: "d", Scenario: "reg/bad:v1"}, apierr.ReasonScenarioNonMatchingSpec},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := w.m.CreateChallenge(bg, &tc.req)
			wantReason(t, err, tc.reason)
			if _, err := w.st.GetChallenge(bg, "d"); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("refused challenge stored: %v", err)
			}
		})
	}
	got, err := w.m.RetrieveChallenge(bg, "c")
	if err != nil || got.ID != "c" || got.Additional["k"] != "v1" || len(got.Instances) != 0 {
		t.Fatalf("retrieve: %+v %v", got, err)
	}
	var seen []string
	if err := w.m.QueryChallenges(bg, func(c *api.Challenge) error { seen = append(seen, c.ID); return nil }); err != nil || !slices.Equal(seen, []string{"c"}) {
		t.Fatalf("query: %v %v", seen, err)
	}
	w.instance(t, "c", "s1")
	if err := w.m.DeleteChallenge(bg, "c"); err != nil {
		t.Fatal(err)
	}
	_, err = w.m.RetrieveChallenge(bg, "c")
	wantReason(t, err, apierr.ReasonChallengeNotFound)
	w.consistent(t)
	if len(w.records(t)) != 0 {
		t.Fatalf("records left: %v", w.records(t))
	}
}

func TestInstanceLifecycle(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	in := w.instance(t, "c", "s1")
	if in.Until == nil || !in.Until.Equal(w.clock().Add(time.Hour)) || !strings.HasPrefix(in.ConnectionInfo, "nc ") {
		t.Fatalf("created %+v", in)
	}
	_, err := w.m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "c", SourceID: "s1"})
	wantReason(t, err, apierr.ReasonInstanceAlreadyExists)
	_, err = w.m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "nope", SourceID: "s1"})
	wantReason(t, err, apierr.ReasonChallengeNotFound)

	got, err := w.m.RetrieveInstance(bg, "c", "s1")
	if err != nil || got.ConnectionInfo != in.ConnectionInfo {
		t.Fatalf("retrieve: %+v %v", got, err)
	}
	var q []*api.Instance
	if err := w.m.QueryInstances(bg, "s1", func(i *api.Instance) error { q = append(q, i); return nil }); err != nil || len(q) != 1 {
		t.Fatalf("query: %v %v", q, err)
	}

	// Renew: until = now + timeout.
	w.advance(30 * time.Minute)
	r, err := w.m.RenewInstance(bg, "c", "s1")
	if err != nil || !r.Until.Equal(w.clock().Add(time.Hour)) || r.Additional != nil {
		t.Fatalf("renew: %+v %v", r, err)
	}
	// Expired: renew refused, the janitor deletes it.
	w.advance(2 * time.Hour)
	_, err = w.m.RenewInstance(bg, "c", "s1")
	wantReason(t, err, apierr.ReasonInstanceExpired)
	rep, err := w.m.Janitor(bg, w.engine, time.Hour)
	if err != nil || rep.Expired != 1 {
		t.Fatalf("janitor: %+v %v", rep, err)
	}
	w.consistent(t)
	_, err = w.m.RetrieveInstance(bg, "c", "s1")
	wantReason(t, err, apierr.ReasonInstanceNotFound)

	// Delete.
	w.instance(t, "c", "s2")
	if err := w.m.DeleteInstance(bg, "c", "s2"); err != nil {
		t.Fatal(err)
	}
	err = w.m.DeleteInstance(bg, "c", "s2")
	wantReason(t, err, apierr.ReasonInstanceNotFound)
	w.consistent(t)
}

func TestRenewRules(t *testing.T) {
	w := newWorld(t)
	if _, err := w.m.CreateChallenge(bg, &api.CreateChallengeRequest{ID: "forever", Scenario: "reg/f:v1"}); err != nil {
		t.Fatal(err)
	}
	w.instance(t, "forever", "s")
	_, err := w.m.RenewInstance(bg, "forever", "s")
	wantReason(t, err, apierr.ReasonChallengeNoRenewal)
	// An instance's until follows its challenge's: no instance record is
	// written by the update.
	w.challenge(t, "c", 0, 0)
	w.instance(t, "c", "s")
	before, _ := w.st.InstanceBySource(bg, "c", "s")
	w.advance(10 * time.Minute)
	if _, err := w.m.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Timeout: ptr(2 * time.Hour), UpdateMask: &api.FieldMask{Paths: []string{"timeout"}}}); err != nil {
		t.Fatal(err)
	}
	after, _ := w.st.InstanceBySource(bg, "c", "s")
	got, _ := w.m.RetrieveInstance(bg, "c", "s")
	if after.Rev != before.Rev || !got.Until.Equal(w.clock().Add(2*time.Hour)) {
		t.Fatalf("until after the update %v (record rev %d → %d)", got.Until, before.Rev, after.Rev)
	}
}

func TestPool(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 2, 3)
	if n := w.events.count(events.TypePoolFill); n != 1 {
		t.Fatalf("registration sent %d fill events, want 1 (one fill fills the pool)", n)
	}
	if n, _ := w.st.PoolCounts(bg, "c"); n.Pooled != 2 {
		t.Fatalf("pool after registration: %+v", n)
	}
	_, pooled, _ := w.st.Instances(bg, "c")
	in := w.instance(t, "c", "a")
	if identityOf(in) != pooled[0].Identity {
		t.Fatalf("claim got %s, want the lowest pooled %s", identityOf(in), pooled[0].Identity)
	}
	w.events.wait()
	if n, _ := w.st.PoolCounts(bg, "c"); n.Pooled != 2 || n.Claimed != 1 {
		t.Fatalf("pool after a claim: %+v", n)
	}
	// max reached: claims keep the total under it.
	w.instance(t, "c", "b")
	w.instance(t, "c", "d")
	w.events.wait()
	if n, _ := w.st.PoolCounts(bg, "c"); n.Total != 3 || n.Pooled != 0 {
		t.Fatalf("pool at max: %+v", n)
	}
	// A claim with additional values redeploys the claimed instance.
	if err := w.m.DeleteInstance(bg, "c", "d"); err != nil {
		t.Fatal(err)
	}
	w.events.wait()
	re, err := w.m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "c", SourceID: "e", Additional: map[string]string{"k": "mine"}})
	if err != nil || !strings.HasSuffix(re.ConnectionInfo, " mine") {
		t.Fatalf("claim with additional: %+v %v", re, err)
	}
	// Lowering min and max shrinks the pool.
	if _, err := w.m.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Min: 0, Max: 0, UpdateMask: &api.FieldMask{Paths: []string{"min", "max"}}}); err != nil {
		t.Fatal(err)
	}
	w.consistent(t)
	if n, _ := w.st.PoolCounts(bg, "c"); n.Pooled != 0 {
		t.Fatalf("pool after min=0: %+v", n)
	}
}

func TestUpdateStrategies(t *testing.T) {
	for _, tc := range []struct {
		strategy api.UpdateStrategy
		newID    bool
	}{{api.UpdateInPlace, false}, {api.BlueGreen, true}, {api.Recreate, false}} {
		t.Run(fmt.Sprint(tc.strategy), func(t *testing.T) {
			w := newWorld(t)
			w.challenge(t, "c", 1, 0)
			before := w.instance(t, "c", "s")
			w.events.wait()
			_, pooledBefore, _ := w.st.Instances(bg, "c")
			if _, err := w.m.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", UpdateStrategy: &tc.strategy,
				Additional: map[string]string{"k": "v2"}, UpdateMask: &api.FieldMask{Paths: []string{"additional"}}}); err != nil {
				t.Fatal(err)
			}
			after, _ := w.m.RetrieveInstance(bg, "c", "s")
			if (identityOf(after) != identityOf(before)) != tc.newID || !strings.HasSuffix(after.ConnectionInfo, " v2") {
				t.Fatalf("%v: %q → %q", tc.strategy, before.ConnectionInfo, after.ConnectionInfo)
			}
			// The pooled instance was replaced by one of the new generation.
			w.consistent(t)
			_, pooled, _ := w.st.Instances(bg, "c")
			if len(pooled) != 1 || pooled[0].Identity == pooledBefore[0].Identity || pooled[0].Generation != 1 {
				t.Fatalf("pool after the update: %+v (before %s)", pooled, pooledBefore[0].Identity)
			}
		})
	}
}

// TestPendingStrategyKept: an update of until sent while a blue-green update
// is pending cannot turn it into an in-place one, even when the broker
// delivers the second update's events first.
func TestPendingStrategyKept(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	before := w.instance(t, "c", "s")
	w.events.hold()
	bgStrategy := api.BlueGreen
	done := make(chan error, 2)
	go func() {
		_, err := w.m.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", UpdateStrategy: &bgStrategy,
			Additional: map[string]string{"k": "v2"}, UpdateMask: &api.FieldMask{Paths: []string{"additional"}}})
		done <- err
	}()
	waitFor(t, "the blue-green update's event", func() bool { return w.events.heldCount() == 1 })
	go func() {
		_, err := w.m.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Until: ptr(w.clock().Add(3 * time.Hour)), UpdateMask: &api.FieldMask{Paths: []string{"until"}}})
		done <- err
	}()
	waitFor(t, "the until update's event", func() bool { return w.events.heldCount() == 2 })
	w.events.releaseReversed()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	after, _ := w.m.RetrieveInstance(bg, "c", "s")
	if identityOf(after) == identityOf(before) || !strings.HasSuffix(after.ConnectionInfo, " v2") {
		t.Fatalf("the pending blue-green update ran in place: %q → %q; engine: %v", before.ConnectionInfo, after.ConnectionInfo, w.engine.ops)
	}
	w.consistent(t)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestFailedUpdateAndRetry(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	w.instance(t, "c", "s")
	failing := true
	var mu sync.Mutex
	w.engine.fail = func(op, _ string, additional map[string]string) error {
		mu.Lock()
		defer mu.Unlock()
		if op == "update" && failing {
			return errors.New("the program failed on purpose")
		}
		return nil
	}
	patch := &api.UpdateChallengeRequest{ID: "c", Additional: map[string]string{"k": "v2"}, UpdateMask: &api.FieldMask{Paths: []string{"additional"}}}
	_, err := w.m.UpdateChallenge(bg, patch)
	wantCode(t, err, apierr.CodeUnknown)
	if !strings.Contains(err.Error(), "instance of source s: the program failed on purpose") {
		t.Fatalf("failure does not name the instance and cause: %v", err)
	}
	if !strings.Contains(w.logs.String(), `"msg":"challenge update failed"`) {
		t.Fatalf("no log line for the failed update:\n%s", w.logs.String())
	}
	// The same PATCH again retries what failed (a new round).
	mu.Lock()
	failing = false
	mu.Unlock()
	if _, err := w.m.UpdateChallenge(bg, patch); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got, _ := w.m.RetrieveInstance(bg, "c", "s"); !strings.HasSuffix(got.ConnectionInfo, " v2") {
		t.Fatalf("after the retry: %+v", got)
	}
}

func TestFailedCreateLeavesNothing(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	w.engine.fail = func(op, _ string, _ map[string]string) error {
		if op == "create" {
			return errors.New("quota exceeded")
		}
		return nil
	}
	_, err := w.m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "c", SourceID: "s"})
	wantCode(t, err, apierr.CodeUnknown)
	w.consistent(t)
	if p, _ := w.st.ListPending(bg, ""); len(p) != 0 {
		t.Fatalf("reservation left: %v", p)
	}
	if !strings.Contains(w.logs.String(), "quota exceeded") || !strings.Contains(w.logs.String(), `"level":"ERROR"`) {
		t.Fatalf("the failure is not logged with its cause:\n%s", w.logs.String())
	}
}

// TestDestroyWinsOverConcurrentWrites: a deletion whose stack is gone removes
// the record whatever was written to it meanwhile (a renewal).
func TestDestroyWinsOverConcurrentWrites(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	in := w.instance(t, "c", "s")
	id := identityOf(in)
	w.engine.fail = func(op, identity string, _ map[string]string) error {
		if op == "destroy" && identity == id {
			// While the stack is destroyed, someone writes the record.
			_, _ = w.st.Under(nil).ModifyInstance(bg, "c", id, func(r *store.Instance) error { r.LastRenew = r.LastRenew.Add(time.Minute); return nil })
		}
		return nil
	}
	if err := w.m.DeleteInstance(bg, "c", "s"); err != nil {
		t.Fatal(err)
	}
	w.consistent(t)
}

func TestJanitorRepairs(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	w.instance(t, "c", "s")
	// A stack no record knows (a create killed after its up) and a record
	// whose stack is gone (a removal refused after its destroy).
	w.engine.stacks["p/0123456789abcdef"] = nil
	rec, _ := w.st.InstanceBySource(bg, "c", "s")
	delete(w.engine.stacks, "p/"+rec.Identity)
	for range 2 { // first run: suspects; the next, after the grace: repaired
		if _, err := w.m.Janitor(bg, w.engine, time.Minute); err != nil {
			t.Fatal(err)
		}
		w.events.wait()
		w.advance(2 * time.Minute)
	}
	w.consistent(t)
	if len(w.records(t)) != 0 {
		t.Fatalf("records left: %v", w.records(t))
	}
}

// TestJanitorHugePool: a min stored before the limits existed makes one fill
// event, not one per missing instance.
func TestJanitorHugePool(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	c, _ := w.st.GetChallenge(bg, "c")
	c.Min, c.Until = 1<<62, ptr(w.clock().Add(-time.Minute)) // expired: no fill may run either
	if err := w.st.Under(nil).UpdateChallenge(bg, c, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := w.m.Janitor(bg, w.engine, time.Minute)
	if err != nil || rep.PoolFills != 0 {
		t.Fatalf("janitor on an expired challenge: %+v %v", rep, err)
	}
	c, _ = w.st.GetChallenge(bg, "c")
	c.Until = nil
	_ = w.st.Under(nil).UpdateChallenge(bg, c, nil)
	before := w.events.count(events.TypePoolFill)
	rep, err = w.m.Janitor(bg, w.engine, time.Minute)
	if err != nil || rep.PoolFills != 1 || w.events.count(events.TypePoolFill)-before != 1 {
		t.Fatalf("janitor: %+v %v", rep, err)
	}
	// Let the fill stop: the challenge goes.
	c, _ = w.st.GetChallenge(bg, "c")
	c.Min = 0
	_ = w.st.Under(nil).UpdateChallenge(bg, c, nil)
}

// TestStoreConflictIsLogged: a failure of the records is answered 5xx and
// says why in the log.
func TestStoreConflictIsLogged(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 0, 0)
	// Concurrent writers of the challenge make the update's compare fail.
	wrapped := &conflicting{Store: w.st}
	m := newManagerOn(w, wrapped)
	_, err := m.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Min: 0, UpdateMask: &api.FieldMask{Paths: []string{"min"}}})
	if err == nil || apierr.From(err).HTTPStatus() < 500 {
		t.Fatalf("conflict answered %v", err)
	}
	if !strings.Contains(w.logs.String(), `"msg":"challenge update failed"`) || !strings.Contains(w.logs.String(), "changed concurrently") {
		t.Fatalf("no log line with the cause:\n%s", w.logs.String())
	}
}

// conflicting makes every challenge update fail as if another writer came first.
type conflicting struct{ *memstore.Store }
