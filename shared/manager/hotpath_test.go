package manager_test

import (
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/memstore"
	"github.com/challfn/challfn/shared/store"
	"google.golang.org/grpc"
)

// The calls every player makes take one etcd round trip each (retrieve,
// query) or one read and one transaction (renew, pool claim), and no lease:
// counted on a real etcd, with the manager's production records and locks.
func TestHotPathRoundTrips(t *testing.T) {
	srv := etcdtest.Server(t)
	var n etcd.Counter
	cli := etcdtest.Client(t, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	records, locks := manager.OnEtcd(store.New(cli, "/hot"), lock.New(cli, lock.Options{Prefix: "/hot"}))
	w := newWorld(t)
	m := manager.New(manager.Options{Records: records, Locks: locks, Scenarios: fakeScenarios{}, Engine: w.engine,
		Events: w.events, Log: w.logger(), Now: w.clock})
	w.events.m = m
	// min = max: a claim asks for no refill, so nothing but the call is counted.
	if _, err := m.CreateChallenge(bg, &api.CreateChallengeRequest{ID: "c", Scenario: "reg/c:v1", Timeout: ptr(time.Hour), Min: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	w.events.wait()

	tests := []struct {
		name string
		call func() error
		want map[string]int64
	}{
		{"claim", func() error {
			_, err := m.CreateInstance(bg, &api.CreateInstanceRequest{ChallengeID: "c", SourceID: "s"})
			return err
		}, map[string]int64{"Txn": 2}},
		{"renew", func() error { _, err := m.RenewInstance(bg, "c", "s"); return err }, map[string]int64{"Txn": 2}},
		{"retrieve", func() error { _, err := m.RetrieveInstance(bg, "c", "s"); return err }, map[string]int64{"Txn": 1}},
		{"query", func() error {
			return m.QueryInstances(bg, "s", func(*api.Instance) error { return nil })
		}, map[string]int64{"Txn": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n.Calls()
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
