package manager_test

import (
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/memstore"
	"github.com/challfn/challfn/shared/store"
	"google.golang.org/grpc"
)

// The calls every player makes take one etcd round trip each, and no lease:
// retrieve and query always; renew and pool claim when this manager saw the
// records last (its previous renewal, retrieval or claim), else one read
// more. Counted on a real etcd, with the manager's production records and
// locks, and a second manager standing for another replica.
func TestHotPathRoundTrips(t *testing.T) {
	srv := etcdtest.Server(t)
	var n etcd.Counter
	cli := etcdtest.Client(t, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	records, locks := manager.OnEtcd(store.New(cli, "/hot"), lock.New(cli, lock.Options{Prefix: "/hot"}))
	w := newWorld(t)
	opts := manager.Options{Records: records, Locks: locks, Scenarios: fakeScenarios{}, Engine: w.engine,
		Events: w.events, Log: w.logger(), Now: w.clock}
	m, other := manager.New(opts), manager.New(opts)
	w.events.m = m
	// min = max: a claim asks for no refill, so nothing but the call is counted.
	if _, err := m.CreateChallenge(bg, &api.CreateChallengeRequest{ID: "c", Scenario: "reg/c:v1", Timeout: ptr(time.Hour), Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	w.events.wait()
	claim := func(m *manager.Manager, sid string) func() error {
		return func() error {
			_, err := m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "c", SourceID: sid})
			return err
		}
	}
	renew := func(m *manager.Manager, sid string) func() error {
		return func() error { _, err := m.RenewInstance(bg, "c", sid); return err }
	}

	tests := []struct {
		name string
		call func() error
		want map[string]int64
	}{
		{"first claim on this replica: read, claim", claim(m, "s"), map[string]int64{"Txn": 2}},
		{"next claim: the last one's view of the pool", claim(m, "t"), map[string]int64{"Txn": 1}},
		{"renew of an instance it claimed", renew(m, "s"), map[string]int64{"Txn": 1}},
		{"renew again", renew(m, "s"), map[string]int64{"Txn": 1}},
		{"renew on another replica: read, renew", renew(other, "s"), map[string]int64{"Txn": 2}},
		{"renew after the other's: refused with the current records, renew", renew(m, "s"), map[string]int64{"Txn": 2}},
		{"retrieve", func() error { _, err := other.RetrieveInstance(bg, "c", "t"); return err }, map[string]int64{"Txn": 1}},
		{"renew of an instance it retrieved", renew(other, "t"), map[string]int64{"Txn": 1}},
		{"query", func() error {
			return m.QueryInstances(bg, "s", func(*api.Instance) error { return nil })
		}, map[string]int64{"Txn": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.Calls()
			w.advance(time.Second)
			if err := tt.call(); err != nil {
				t.Fatal(err)
			}
			if got := n.Calls(); !maps.Equal(got, tt.want) {
				t.Fatalf("etcd calls %v, want %v", got, tt.want)
			}
		})
	}
}

// Under contention the hot paths take the locked ones: a renewal and a
// claim made while an organiser's PATCH holds the challenge's writer lock
// wait for it, and then apply.
func TestHotPathWaitsForWriters(t *testing.T) {
	w := newWorld(t)
	w.challenge(t, "c", 2, 0)
	w.instance(t, "c", "a")
	w.advance(time.Minute)
	held, err := w.st.Acquire(bg, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	done := make(chan string, 2)
	var renewed *api.Instance
	wg.Go(func() {
		in, err := w.m.RenewInstance(bg, "c", "a")
		if err != nil {
			t.Error(err)
		}
		renewed = in
		done <- "renew"
	})
	wg.Go(func() {
		if _, err := w.m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "c", SourceID: "b"}); err != nil {
			t.Error(err)
		}
		done <- "claim"
	})
	// Both are queued behind the writer.
	waitQueued(t, w.st, "c", 3)
	select {
	case op := <-done:
		t.Fatalf("%s went through a held writer lock", op)
	default:
	}
	held.Release(bg)
	wg.Wait()
	if renewed == nil || !renewed.LastRenew.Equal(w.clock()) {
		t.Fatalf("renewal %+v, want LastRenew %v", renewed, w.clock())
	}
}

// waitQueued waits until n acquisitions hold or wait for challenge cid's lock.
func waitQueued(t *testing.T, st *memstore.Store, cid string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st.Queued(cid) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d at the lock of %s, want %d", st.Queued(cid), cid, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A renewal starts from the records this manager saw last but answers from
// the current ones: changes made through another replica (a new timeout, a
// timeout removed, the instance deleted) are what it applies.
func TestHotRenewJudgesCurrentRecords(t *testing.T) {
	w := newWorld(t)
	other := newManagerOn(w, w.st)
	w.challenge(t, "c", 0, 0)
	w.instance(t, "c", "s")
	if _, err := w.m.RenewInstance(bg, "c", "s"); err != nil { // seen by w.m now
		t.Fatal(err)
	}
	steps := []struct {
		name   string
		change func() error
		check  func(*api.Instance, error) error
	}{
		{"timeout changed elsewhere", func() error {
			_, err := other.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Timeout: ptr(3 * time.Hour), UpdateMask: &api.FieldMask{Paths: []string{"timeout"}}})
			return err
		}, func(in *api.Instance, err error) error {
			if err != nil || in == nil || !in.Until.Equal(w.clock().Add(3*time.Hour)) {
				return fmt.Errorf("renewal %+v, %v: want until now+3h", in, err)
			}
			return nil
		}},
		{"renewed elsewhere", func() error {
			_, err := other.RenewInstance(bg, "c", "s")
			return err
		}, func(in *api.Instance, err error) error {
			if err != nil || !in.LastRenew.Equal(w.clock()) {
				return fmt.Errorf("renewal %+v, %v: want LastRenew now", in, err)
			}
			return nil
		}},
		{"timeout removed elsewhere", func() error {
			_, err := other.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", UpdateMask: &api.FieldMask{Paths: []string{"timeout"}}})
			return err
		}, func(_ *api.Instance, err error) error {
			if err == nil || apierr.From(err).Reason() != apierr.ReasonChallengeNoRenewal {
				return fmt.Errorf("renewal error %v, want %s", err, apierr.ReasonChallengeNoRenewal)
			}
			return nil
		}},
		// This manager last saw the challenge without a timeout: its
		// refusal would be wrong now.
		{"timeout set again elsewhere, after a retrieval here", func() error {
			if _, err := w.m.RetrieveInstance(bg, "c", "s"); err != nil {
				return err
			}
			_, err := other.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Timeout: ptr(2 * time.Hour), UpdateMask: &api.FieldMask{Paths: []string{"timeout"}}})
			return err
		}, func(in *api.Instance, err error) error {
			if err != nil || in == nil || !in.Until.Equal(w.clock().Add(2*time.Hour)) {
				return fmt.Errorf("renewal %+v, %v: want until now+2h", in, err)
			}
			return nil
		}},
		{"deleted elsewhere", func() error {
			if _, err := other.UpdateChallenge(bg, &api.UpdateChallengeRequest{ID: "c", Timeout: ptr(time.Hour), UpdateMask: &api.FieldMask{Paths: []string{"timeout"}}}); err != nil {
				return err
			}
			if _, err := w.m.RenewInstance(bg, "c", "s"); err != nil {
				return err
			}
			return other.DeleteInstance(bg, "c", "s")
		}, func(_ *api.Instance, err error) error {
			if err == nil || apierr.From(err).Reason() != apierr.ReasonInstanceNotFound {
				return fmt.Errorf("renewal error %v, want %s", err, apierr.ReasonInstanceNotFound)
			}
			return nil
		}},
	}
	for _, st := range steps {
		w.advance(time.Minute)
		if err := st.change(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		w.events.wait()
		w.advance(time.Minute)
		in, err := w.m.RenewInstance(bg, "c", "s")
		if err := st.check(in, err); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	w.consistent(t)
}
