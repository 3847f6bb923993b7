package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/store"
)

const prefix = "/t"

func newStore(t testing.TB) (*store.Store, *clientv3.Client) {
	t.Helper()
	cli := etcdtest.Start(t)
	return store.New(cli, prefix), cli
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t testing.TB, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func ptr[T any](v T) *T { return &v }

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func lease(t testing.TB, cli *clientv3.Client) clientv3.LeaseID {
	t.Helper()
	l, err := cli.Grant(context.Background(), 30)
	must(t, err)
	return l.ID
}

// allKeys lists every key under the test prefix.
func allKeys(t testing.TB, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	must(t, err)
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// addClaimed creates a claimed instance through a reservation.
func addClaimed(t testing.TB, s *store.Store, cli *clientv3.Client, cid, sid, identity string) *store.Instance {
	t.Helper()
	ctx := context.Background()
	must(t, s.Reserve(ctx, cid, sid, identity, lease(t, cli)))
	i := &store.Instance{ChallengeID: cid, SourceID: sid, Identity: identity, Since: t0, LastRenew: t0,
		ConnectionInfo: "nc " + identity, Flags: []string{"FLAG{" + identity + "}"}, Additional: map[string]string{"k": "v"}, Digest: "sha256:x", Project: "p"}
	must(t, s.CommitInstance(ctx, i))
	return i
}

// addPooled creates a pooled instance through a pool reservation.
func addPooled(t testing.TB, s *store.Store, cli *clientv3.Client, cid, identity string) *store.Instance {
	t.Helper()
	ctx := context.Background()
	must(t, s.Reserve(ctx, cid, "", identity, lease(t, cli)))
	i := &store.Instance{ChallengeID: cid, Identity: identity, Since: t0, LastRenew: t0, ConnectionInfo: "nc " + identity}
	must(t, s.CommitInstance(ctx, i))
	return i
}

func addChallenge(t testing.TB, s *store.Store, id string) *store.Challenge {
	t.Helper()
	c := &store.Challenge{ID: id, Scenario: "reg/" + id + ":v1", Digest: "sha256:" + id, Project: "p", Timeout: ptr(time.Hour), Min: 1, Max: 5}
	must(t, s.CreateChallenge(context.Background(), c))
	return c
}

func TestChallengeLifecycle(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	c := &store.Challenge{ID: "1", Scenario: "reg/a:v1", Digest: "sha256:a", Timeout: ptr(90 * time.Second), Until: ptr(t0),
		Additional: map[string]string{"a": "b"}, Min: 1, Max: 3}
	must(t, s.CreateChallenge(ctx, c))
	if c.Rev == 0 {
		t.Fatal("Rev not set by create")
	}
	wantErr(t, s.CreateChallenge(ctx, &store.Challenge{ID: "1"}), store.ErrExists)
	addChallenge(t, s, "10")
	addChallenge(t, s, "2")

	got, err := s.GetChallenge(ctx, "1")
	must(t, err)
	if got.Rev != c.Rev || *got.Timeout != 90*time.Second || !got.Until.Equal(t0) || got.Additional["a"] != "b" || got.Max != 3 {
		t.Fatalf("read back %+v, stored %+v", got, c)
	}
	_, err = s.GetChallenge(ctx, "3")
	wantErr(t, err, store.ErrNotFound)

	stale := *got
	got.Min = 2
	must(t, s.UpdateChallenge(ctx, got, nil))
	stale.Max = 9
	wantErr(t, s.UpdateChallenge(ctx, &stale, nil), store.ErrConflict)
	wantErr(t, s.UpdateChallenge(ctx, &store.Challenge{ID: "nope", Rev: 1}, nil), store.ErrNotFound)

	list, err := s.AllChallenges(ctx)
	must(t, err)
	var ids []string
	for _, sn := range list {
		ids = append(ids, sn.Challenge.ID)
	}
	if !slices.Equal(ids, []string{"1", "10", "2"}) {
		t.Fatalf("AllChallenges = %v", ids)
	}

	addClaimed(t, s, cli, "1", "s", "i1")
	wantErr(t, s.DeleteChallenge(ctx, "1"), store.ErrNotEmpty)
	i, err := s.InstanceBySource(ctx, "1", "s")
	must(t, err)
	must(t, s.DeleteInstance(ctx, i))
	must(t, s.DeleteChallenge(ctx, "1"))
	wantErr(t, s.DeleteChallenge(ctx, "1"), store.ErrNotFound)
}

func TestPrefixesDoNotOverlap(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "1")
	addChallenge(t, s, "10")
	addClaimed(t, s, cli, "10", "s", "a")
	addClaimed(t, s, cli, "10", "s1", "b")
	addPooled(t, s, cli, "10", "c")

	snap, err := s.GetSnapshot(ctx, "1")
	must(t, err)
	if len(snap.Claimed)+len(snap.Pooled) != 0 {
		t.Fatalf("challenge 1 sees instances of challenge 10: %+v", snap)
	}
	counts, err := s.PoolCounts(ctx, "1")
	must(t, err)
	if counts != (store.ChallengeCounts{}) {
		t.Fatalf("PoolCounts(1) = %+v", counts)
	}
	bySrc, _, err := s.SourceInstances(ctx, "s")
	must(t, err)
	if len(bySrc) != 1 || bySrc[0].Identity != "a" {
		t.Fatalf("ListBySource(s) = %v (source s1 must not match)", bySrc)
	}
	_, err = s.ClaimPooled(ctx, "1", "s9", nil)
	wantErr(t, err, store.ErrPoolEmpty)
	wantErr(t, err, store.ErrNotFound)
}

func TestReservation(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")
	l := lease(t, cli)

	wantErr(t, s.Reserve(ctx, "missing", "s", "i0", l), store.ErrNotFound)
	must(t, s.Reserve(ctx, "c", "s", "i1", l))
	wantErr(t, s.Reserve(ctx, "c", "s", "i2", l), store.ErrExists)
	pending, err := s.ListPending(ctx, "c")
	must(t, err)
	if !slices.Equal(pending, []store.Pending{{ChallengeID: "c", Identity: "i1", SourceID: "s"}}) {
		t.Fatalf("ListPending = %v, want i1 for s", pending)
	}
	_, err = s.InstanceBySource(ctx, "c", "s")
	wantErr(t, err, store.ErrNotFound) // a reservation is not an instance

	i := &store.Instance{ChallengeID: "c", SourceID: "s", Identity: "i1", Since: t0, LastRenew: t0.Add(time.Hour)}
	wrong := *i
	wrong.Identity = "other"
	wantErr(t, s.CommitInstance(ctx, &wrong), store.ErrNoReservation)
	must(t, s.CommitInstance(ctx, i))
	got, err := s.InstanceBySource(ctx, "c", "s")
	must(t, err)
	if got.Identity != "i1" || got.Rev != i.Rev || !got.LastRenew.Equal(i.LastRenew) {
		t.Fatalf("GetBySource = %+v, committed %+v", got, i)
	}
	pending, err = s.ListPending(ctx, "")
	must(t, err)
	if len(pending) != 0 {
		t.Fatalf("pending after commit: %v", pending)
	}
	wantErr(t, s.Reserve(ctx, "c", "s", "i3", l), store.ErrExists) // the claim is permanent

	// Abort frees the source; a commit after the abort fails.
	must(t, s.Reserve(ctx, "c", "s2", "i4", l))
	must(t, s.Unreserve(ctx, "c", "s2", "i4"))
	wantErr(t, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", SourceID: "s2", Identity: "i4"}), store.ErrNoReservation)
	must(t, s.Reserve(ctx, "c", "s2", "i5", l))

	// Lease loss (crash) frees the source and the pending marker.
	_, err = cli.Revoke(ctx, l)
	must(t, err)
	pending, err = s.ListPending(ctx, "c")
	must(t, err)
	if len(pending) != 0 {
		t.Fatalf("pending after lease loss: %v", pending)
	}
	wantErr(t, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", SourceID: "s2", Identity: "i5"}), store.ErrNoReservation)
	must(t, s.Reserve(ctx, "c", "s2", "i6", lease(t, cli)))
}

func TestConcurrentReservationsOneWinner(t *testing.T) {
	s, cli := newStore(t)
	addChallenge(t, s, "c")
	l := lease(t, cli)
	const n = 20
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() { errs[k] = s.Reserve(context.Background(), "c", "src", fmt.Sprintf("id%02d", k), l) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrExists):
			t.Fatal(err)
		}
	}
	if won != 1 {
		t.Fatalf("%d reservations won, want exactly 1", won)
	}
}

func TestClaimLowestFirst(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")
	for _, id := range []string{"c3", "a1", "b2"} {
		addPooled(t, s, cli, "c", id)
	}
	must(t, s.Reserve(ctx, "c", "", "d4", lease(t, cli))) // a spin-up in flight
	counts, err := s.PoolCounts(ctx, "c")
	must(t, err)
	if counts != (store.ChallengeCounts{Claimed: 0, Pooled: 3, Reserved: 1, Total: 3}) {
		t.Fatalf("PoolCounts = %+v", counts)
	}
	now := t0.Add(time.Minute)
	claim, err := s.ClaimPooled(ctx, "c", "s1", func(i *store.Instance) {
		i.LastRenew, i.Additional = now, map[string]string{"x": "y"}
		i.Since = now // must be ignored: since stays the pool creation time
	})
	must(t, err)
	if claim.PooledBefore != 3 || claim.Total != 3 {
		t.Fatalf("claim counted %d pooled before, %d total; want 3, 3", claim.PooledBefore, claim.Total)
	}
	i := claim.Instance
	if i.Identity != "a1" || i.SourceID != "s1" || !i.Since.Equal(t0) || !i.LastRenew.Equal(now) || i.Additional["x"] != "y" {
		t.Fatalf("claimed %+v", i)
	}
	got, err := s.InstanceBySource(ctx, "c", "s1")
	must(t, err)
	if got.Identity != "a1" || got.Rev != i.Rev {
		t.Fatalf("GetBySource after claim = %+v", got)
	}
	_, err = s.ClaimPooled(ctx, "c", "s1", nil)
	wantErr(t, err, store.ErrExists)
	must(t, s.Reserve(ctx, "c", "s2", "zz", lease(t, cli)))
	_, err = s.ClaimPooled(ctx, "c", "s2", nil)
	wantErr(t, err, store.ErrExists) // a reservation counts too

	counts, err = s.PoolCounts(ctx, "c")
	must(t, err)
	if counts != (store.ChallengeCounts{Claimed: 1, Pooled: 2, Reserved: 1, Total: 3}) {
		t.Fatalf("PoolCounts after claim = %+v", counts)
	}
}

func TestClaimRace(t *testing.T) {
	s, cli := newStore(t)
	addChallenge(t, s, "c")
	for _, id := range []string{"p1", "p2", "p3"} {
		addPooled(t, s, cli, "c", id)
	}
	const n = 10
	got := make([]*store.Claim, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() { got[k], errs[k] = s.ClaimPooled(context.Background(), "c", fmt.Sprintf("s%d", k), nil) })
	}
	wg.Wait()
	var ids []string
	for k := range n {
		switch {
		case errs[k] == nil:
			ids = append(ids, got[k].Instance.Identity)
		case !errors.Is(errs[k], store.ErrPoolEmpty):
			t.Fatal(errs[k])
		}
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"p1", "p2", "p3"}) {
		t.Fatalf("winners claimed %v, want each of p1 p2 p3 once", ids)
	}
}

// A pooled instance being destroyed must never be claimed: Withdraw and
// ClaimPooled race on the same record, and exactly one of them wins.
func TestWithdrawVersusClaim(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")

	// Withdrawn first: the claim finds the pool empty, and rewriting the
	// draining record (a failed destroy is recorded) does not re-pool it.
	p1 := addPooled(t, s, cli, "c", "p1")
	must(t, s.Withdraw(ctx, p1))
	_, err := s.ClaimPooled(ctx, "c", "s1", nil)
	wantErr(t, err, store.ErrPoolEmpty)
	p1.DeleteFailed = true
	must(t, s.PutInstance(ctx, p1))
	_, err = s.ClaimPooled(ctx, "c", "s1", nil)
	wantErr(t, err, store.ErrPoolEmpty)
	must(t, s.DeleteInstance(ctx, p1))

	// Claimed first: the withdrawal of the record as read before fails.
	p2 := addPooled(t, s, cli, "c", "p2")
	if _, err := s.ClaimPooled(ctx, "c", "s2", nil); err != nil {
		t.Fatal(err)
	}
	wantErr(t, s.Withdraw(ctx, p2), store.ErrConflict)
	in, err := s.InstanceBySource(ctx, "c", "s2")
	if err != nil || in.Identity != "p2" || in.Draining {
		t.Fatalf("claimed instance: %+v, %v", in, err)
	}

	// Concurrently, many times: never both.
	for k := range 20 {
		id := fmt.Sprintf("r%d", k)
		in := addPooled(t, s, cli, "c", id)
		var werr, cerr error
		var wg sync.WaitGroup
		wg.Go(func() { werr = s.Withdraw(ctx, in) })
		wg.Go(func() { _, cerr = s.ClaimPooled(ctx, "c", "x"+id, nil) })
		wg.Wait()
		if (werr == nil) == (cerr == nil) {
			t.Fatalf("round %d: withdraw %v, claim %v: want exactly one winner", k, werr, cerr)
		}
		cur, err := s.InstanceByIdentity(ctx, "c", id)
		must(t, err)
		must(t, s.DeleteInstance(ctx, cur))
	}
}

func TestInstanceUpdateAndDelete(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")
	i := addClaimed(t, s, cli, "c", "s", "old")

	// Renew: a compare-and-swap on the revision read.
	read, err := s.InstanceBySource(ctx, "c", "s")
	must(t, err)
	stale := *read
	read.LastRenew = t0.Add(2 * time.Hour)
	must(t, s.PutInstance(ctx, read))
	wantErr(t, s.PutInstance(ctx, &stale), store.ErrConflict)

	// Blue-green: the identity changes, claim and index follow.
	must(t, s.Reserve(ctx, "c", "", "new", lease(t, cli))) // the new stack is pending meanwhile
	updated := *read
	updated.Identity, updated.ConnectionInfo = "new", "nc new"
	must(t, s.ReplaceInstance(ctx, read, &updated))
	wantErr(t, s.ReplaceInstance(ctx, read, &updated), store.ErrNotFound) // old one is gone
	if p, err := s.ListPending(ctx, "c"); err != nil || len(p) != 0 {
		t.Fatalf("pending marker of the new identity after replace: %v, %v", p, err)
	}
	read = &updated
	_, err = s.InstanceByIdentity(ctx, "c", "old")
	wantErr(t, err, store.ErrNotFound)
	bySrc, err := s.InstanceBySource(ctx, "c", "s")
	must(t, err)
	if bySrc.Identity != "new" || bySrc.ConnectionInfo != "nc new" || bySrc.Rev != read.Rev {
		t.Fatalf("after blue-green GetBySource = %+v", bySrc)
	}
	// Moving to another source is refused.
	moved := *bySrc
	moved.SourceID = "other"
	wantErr(t, s.PutInstance(ctx, &moved), store.ErrInvalid)

	// A hand-built record (no read) updates too, given the right Rev.
	must(t, s.PutInstance(ctx, &store.Instance{ChallengeID: "c", SourceID: "s", Identity: "new", Rev: bySrc.Rev, Since: i.Since}))

	// Delete removes record and claim; a second delete finds nothing.
	cur, err := s.InstanceByIdentity(ctx, "c", "new")
	must(t, err)
	must(t, s.DeleteInstance(ctx, cur))
	wantErr(t, s.DeleteInstance(ctx, cur), store.ErrNotFound)
	for _, k := range allKeys(t, cli) {
		if k != prefix+"/chall/c" {
			t.Fatalf("key left after delete: %s", k)
		}
	}
	must(t, s.Reserve(ctx, "c", "s", "again", lease(t, cli))) // the source is free again
}

// TestModifyAndRemoveFollowConcurrentWrites: what an operation commits after
// its engine ran applies to the current record, not to the one it read
// before: a renewal made meanwhile is kept, and a destroyed stack's record is
// removed whatever was written to it.
func TestModifyAndRemoveFollowConcurrentWrites(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")
	addClaimed(t, s, cli, "c", "s", "id1")
	before, err := s.InstanceByIdentity(ctx, "c", "id1") // an update reads, then deploys...
	must(t, err)
	renewed := *before // ... while the player renews
	renewed.LastRenew = t0.Add(time.Hour)
	must(t, s.PutInstance(ctx, &renewed))

	// The update's outputs land on the renewed record.
	calls := 0
	got, err := s.ModifyInstance(ctx, "c", "id1", func(cur *store.Instance) error {
		calls++
		if calls == 1 {
			// Another write between the read and the transaction: re-applied.
			racing := *cur
			racing.LastRenew = t0.Add(2 * time.Hour)
			must(t, s.PutInstance(ctx, &racing))
		}
		cur.ConnectionInfo = "nc updated"
		return nil
	})
	must(t, err)
	if calls != 2 || got.ConnectionInfo != "nc updated" || !got.LastRenew.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("modified after %d calls: %+v", calls, got)
	}
	// ErrUnchanged writes nothing; other errors come back as they are.
	same, err := s.ModifyInstance(ctx, "c", "id1", func(*store.Instance) error { return store.ErrUnchanged })
	if err != nil || same.Rev != got.Rev {
		t.Fatalf("ErrUnchanged: %v, rev %d → %d", err, got.Rev, same.Rev)
	}
	boom := errors.New("boom")
	if _, err := s.ModifyInstance(ctx, "c", "id1", func(*store.Instance) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("change error: %v", err)
	}
	// A move to another identity (blue-green) through Modify.
	must(t, s.Reserve(ctx, "c", "", "id2", lease(t, cli)))
	moved, err := s.ModifyInstance(ctx, "c", "id1", func(cur *store.Instance) error { cur.Identity = "id2"; return nil })
	must(t, err)
	if bySrc, err := s.InstanceBySource(ctx, "c", "s"); err != nil || bySrc.Identity != "id2" || bySrc.Rev != moved.Rev {
		t.Fatalf("after a move: %+v, %v", bySrc, err)
	}
	_, err = s.ModifyInstance(ctx, "c", "id1", func(*store.Instance) error { return nil })
	wantErr(t, err, store.ErrNotFound)

	// Remove after a write the remover never saw; then again: nothing to do.
	renewed2 := *moved
	renewed2.LastRenew = t0.Add(3 * time.Hour)
	must(t, s.PutInstance(ctx, &renewed2))
	must(t, s.RemoveInstance(ctx, "c", "id2"))
	must(t, s.RemoveInstance(ctx, "c", "id2"))
	for _, k := range allKeys(t, cli) {
		if k != prefix+"/chall/c" {
			t.Fatalf("key left after remove: %s", k)
		}
	}
}

func TestSnapshotsAndCounts(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	for _, c := range []string{"a", "b", "c"} {
		addChallenge(t, s, c)
	}
	addClaimed(t, s, cli, "a", "s2", "a2")
	addClaimed(t, s, cli, "a", "s1", "a1")
	addPooled(t, s, cli, "a", "ap")
	addClaimed(t, s, cli, "b", "s1", "b1")

	snaps, err := s.AllChallenges(ctx)
	must(t, err)
	if len(snaps) != 3 {
		t.Fatalf("%d snapshots", len(snaps))
	}
	type shape struct {
		id              string
		claimed, pooled []string
	}
	var got []shape
	for _, sn := range snaps {
		sh := shape{id: sn.Challenge.ID}
		for _, i := range sn.Claimed {
			sh.claimed = append(sh.claimed, i.SourceID+"="+i.Identity)
		}
		for _, i := range sn.Pooled {
			sh.pooled = append(sh.pooled, i.Identity)
		}
		if sn.Revision != snaps[0].Revision {
			t.Fatal("snapshots read at different revisions")
		}
		got = append(got, sh)
	}
	want := []shape{{"a", []string{"s1=a1", "s2=a2"}, []string{"ap"}}, {"b", []string{"s1=b1"}, nil}, {"c", nil, nil}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("SnapshotAll = %v, want %v", got, want)
	}

	one, err := s.GetSnapshot(ctx, "a")
	must(t, err)
	if len(one.Claimed) != 2 || len(one.Pooled) != 1 || one.Claimed[0].SourceID != "s1" {
		t.Fatalf("GetSnapshot(a) = %+v", one)
	}
	_, err = s.GetSnapshot(ctx, "zz")
	wantErr(t, err, store.ErrNotFound)

	n, err := s.Count(ctx)
	must(t, err)
	if n != (store.Counts{Challenges: 3, Instances: 4, Claimed: 3, Pooled: 1}) {
		t.Fatalf("Count = %+v", n)
	}
}

func TestPagedReads(t *testing.T) {
	s, cli := newStore(t)
	s.SetPageSize(3) // force several pages
	ctx := context.Background()
	for k := range 7 {
		addChallenge(t, s, fmt.Sprintf("c%d", k))
		addClaimed(t, s, cli, fmt.Sprintf("c%d", k), "src", fmt.Sprintf("i%d", k))
	}
	snaps, err := s.AllChallenges(ctx)
	must(t, err)
	list := snaps
	bySrc, _, err := s.SourceInstances(ctx, "src")
	must(t, err)
	snaps, err = s.AllChallenges(ctx)
	must(t, err)
	claimed := 0
	for _, sn := range snaps {
		claimed += len(sn.Claimed)
	}
	if len(list) != 7 || len(bySrc) != 7 || len(snaps) != 7 || claimed != 7 {
		t.Fatalf("paged reads: %d challenges, %d by source, %d snapshots with %d claimed; want 7 each", len(list), len(bySrc), len(snaps), claimed)
	}
}

func TestFencedWritesFailAfterLockLoss(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	l := lock.New(cli, lock.Options{Prefix: prefix})
	h, err := l.Acquire(ctx, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	must(t, err)
	c := &store.Challenge{ID: "c", Scenario: "x"}
	must(t, s.CreateChallenge(ctx, c, h.Fence()...))
	_, err = cli.Revoke(ctx, h.Lease()) // lost behind the holder's back
	must(t, err)
	c.Min = 4
	wantErr(t, s.UpdateChallenge(ctx, c, nil, h.Fence()...), store.ErrFenced)
	wantErr(t, s.CreateChallenge(ctx, &store.Challenge{ID: "d"}, h.Fence()...), store.ErrFenced)
	wantErr(t, s.Reserve(ctx, "c", "s", "i", h.Lease(), h.Fence()...), store.ErrFenced)
	got, err := s.GetChallenge(ctx, "c")
	must(t, err)
	if got.Min != 0 {
		t.Fatal("fenced update was applied")
	}
	_ = h.Release(ctx)
}

func TestDeleteChallengeLeavesNothing(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")
	addChallenge(t, s, "other")
	addClaimed(t, s, cli, "c", "s1", "i1")
	addPooled(t, s, cli, "c", "p1")
	must(t, s.Reserve(ctx, "c", "", "p2", lease(t, cli)))
	must(t, s.Reserve(ctx, "c", "s9", "i9", lease(t, cli)))
	must(t, s.Reserve(ctx, "other", "", "o1", lease(t, cli)))
	pending, err := s.ListPending(ctx, "")
	must(t, err)
	want := []store.Pending{{ChallengeID: "c", Identity: "i9", SourceID: "s9"}, {ChallengeID: "c", Identity: "p2"}, {ChallengeID: "other", Identity: "o1"}}
	if !slices.Equal(pending, want) {
		t.Fatalf("ListPending(all) = %+v, want %+v", pending, want)
	}
	must(t, s.Unreserve(ctx, "other", "", "o1"))

	snap, err := s.GetSnapshot(ctx, "c")
	must(t, err)
	for _, i := range append(snap.Claimed, snap.Pooled...) {
		must(t, s.DeleteInstance(ctx, i))
	}
	must(t, s.DeleteChallenge(ctx, "c"))
	keys := allKeys(t, cli)
	if !slices.Equal(keys, []string{prefix + "/chall/other"}) {
		t.Fatalf("keys left after deleting challenge c: %v", keys)
	}
}

func TestUpdateChallengeWithInstances(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	c := addChallenge(t, s, "c")
	const n = 30 // more than one transaction's worth
	for k := range n {
		addPooled(t, s, cli, "c", fmt.Sprintf("i%02d", k))
	}
	_, pooled, err := s.Instances(ctx, "c")
	must(t, err)
	if len(pooled) != n {
		t.Fatalf("Instances = %d pooled", len(pooled))
	}
	stale := *pooled[0]
	// What an update does to outdated pooled instances: withdraw them.
	for _, i := range pooled {
		i.Draining = true
	}
	c.Generation++
	must(t, s.UpdateChallenge(ctx, c, pooled))
	got, err := s.GetChallenge(ctx, "c")
	must(t, err)
	if got.Generation != 1 {
		t.Fatalf("after update: generation %d", got.Generation)
	}
	counts, err := s.PoolCounts(ctx, "c")
	must(t, err)
	if counts.Pooled != 0 || counts.Total != n {
		t.Fatalf("after withdrawing every pooled instance: %+v", counts)
	}
	if _, err := s.ClaimPooled(ctx, "c", "s", nil); !errors.Is(err, store.ErrPoolEmpty) {
		t.Fatalf("claim of a withdrawn instance: %v", err)
	}
	wantErr(t, s.UpdateChallenge(ctx, c, []*store.Instance{&stale}), store.ErrConflict)
}

func TestPoolReservation(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "c")
	addPooled(t, s, cli, "c", "p1")
	wantErr(t, s.Reserve(ctx, "c", "", "p1", lease(t, cli)), store.ErrExists) // identity taken
	wantErr(t, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", Identity: "p2"}), store.ErrNoReservation)
	l := lease(t, cli)
	must(t, s.Reserve(ctx, "c", "", "p2", l))
	wantErr(t, s.Reserve(ctx, "c", "", "p2", l), store.ErrExists) // already pending
	_, err := cli.Revoke(ctx, l)                                  // the spin-up crashed
	must(t, err)
	wantErr(t, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", Identity: "p2"}), store.ErrNoReservation)
	counts, err := s.PoolCounts(ctx, "c")
	must(t, err)
	if counts != (store.ChallengeCounts{Pooled: 1, Total: 1}) {
		t.Fatalf("PoolCounts = %+v", counts)
	}
}

func TestIdentitiesAndMeta(t *testing.T) {
	s, cli := newStore(t)
	ctx := context.Background()
	addChallenge(t, s, "a")
	addChallenge(t, s, "b")
	addClaimed(t, s, cli, "a", "s", "i1")
	addPooled(t, s, cli, "b", "i2")
	must(t, s.Reserve(ctx, "a", "s2", "i3", lease(t, cli)))
	must(t, s.Reserve(ctx, "b", "", "i4", lease(t, cli)))
	ids, err := s.Identities(ctx)
	must(t, err)
	if len(ids) != 4 || !ids["i1"] || !ids["i2"] || !ids["i3"] || !ids["i4"] {
		t.Fatalf("Identities = %v", ids)
	}

	got, err := s.GetMeta(ctx, "orphans")
	must(t, err)
	if got != nil {
		t.Fatalf("absent meta = %q", got)
	}
	must(t, s.PutMeta(ctx, "orphans", []byte(`{"x":1}`)))
	got, err = s.GetMeta(ctx, "orphans")
	must(t, err)
	if string(got) != `{"x":1}` {
		t.Fatalf("meta = %q", got)
	}
}

// Concurrent claims of one process aim at distinct pooled instances
// (claiming.go): a burst on one challenge costs about one read and one
// claim each, instead of rounds of lost races. Counted on a real etcd.
func TestConcurrentClaimsSpread(t *testing.T) {
	srv := etcdtest.Server(t)
	var n etcd.Counter
	cli := etcdtest.Client(t, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	s := store.New(cli, prefix)
	addChallenge(t, s, "c")
	const claims = 50
	for k := range claims {
		addPooled(t, s, cli, "c", fmt.Sprintf("p%02d", k))
	}
	accept := func(*store.Challenge) error { return nil }
	before := n.Unary()
	ready := make(chan struct{})
	var wg sync.WaitGroup
	var ids sync.Map
	for k := range claims {
		wg.Go(func() {
			<-ready
			_, claim, err := s.ClaimWithChallenge(context.Background(), "c", fmt.Sprintf("s%d", k), nil, accept, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if _, dup := ids.LoadOrStore(claim.Instance.Identity, k); dup {
				t.Errorf("%s claimed twice", claim.Instance.Identity)
			}
		})
	}
	close(ready)
	wg.Wait()
	rt := n.Unary() - before
	t.Logf("%d round trips for %d concurrent claims", rt, claims)
	if rt > claims*3 {
		t.Fatalf("%d round trips for %d concurrent claims, want at most %d: claims collide (without the spreading: ~3.5 per claim)", rt, claims, claims*3)
	}
}
