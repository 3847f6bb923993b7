// Package storetest is the conformance suite of the manager's records and
// locks (manager.Records, manager.Locks): what every implementation must do
// for the rules to hold. The etcd ones (shared/store, shared/lock) and the
// in-memory one (shared/memstore) run it, so that unit tests of the manager
// on memory say something about production.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/store"
)

// Backend is one implementation under test.
type Backend struct {
	Records manager.Records
	Locks   manager.Locks
	// Expire makes h lose its locks as a lost lease does (a frozen holder).
	Expire func(t *testing.T, h manager.Held)
}

// Factory makes a fresh, empty Backend for one test.
type Factory func(t *testing.T) Backend

// patience bounds every wait, so that a deadlock fails instead of hanging.
const patience = 30 * time.Second

// Run runs the suite.
func Run(t *testing.T, f Factory) {
	for _, tc := range []struct {
		name string
		run  func(*testing.T, Backend)
	}{
		{"ChallengeLifecycle", challengeLifecycle},
		{"Reservations", reservations},
		{"ReservationsVanishWithTheirLocks", reservationsVanish},
		{"PoolClaims", poolClaims},
		{"WithdrawBeatsClaim", withdrawBeatsClaim},
		{"ModifyAndRemoveFollowConcurrentWrites", modifyAndRemove},
		{"LostLocksFenceWrites", fencing},
		{"Reads", reads},
		{"WritersExclude", writersExclude},
		{"ReadersShareWritersWait", readersShare},
		{"WriterPreference", writerPreference},
		{"CancelledWaitLeavesNothing", cancelledWait},
		{"ReleaseChallengeKeepsInstance", releaseChallenge},
		{"TryLockAndBusy", tryLockAndBusy},
		{"QuietFencesOnConflicts", quietFences},
		{"HotWritesAssertWhatTheyRead", hotWrites},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, f(t)) })
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("error %v, want %v", err, want)
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return c
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func acquire(t *testing.T, b Backend, c lock.Chain) manager.Held {
	t.Helper()
	h, err := b.Locks.Acquire(ctx(t), c)
	must(t, err)
	t.Cleanup(func() { _ = h.Release(context.Background()) })
	return h
}

func addChallenge(t *testing.T, b Backend, id string) *store.Challenge {
	t.Helper()
	c := &store.Challenge{ID: id, Scenario: "reg/x:v1", Digest: "sha256:x", Min: 1, Max: 4}
	must(t, b.Records.Under(nil).CreateChallenge(ctx(t), c))
	return c
}

// addInstance creates an instance the way a create does (reserve, commit),
// under its own lock.
func addInstance(t *testing.T, b Backend, cid, sid, identity string) *store.Instance {
	t.Helper()
	h := acquire(t, b, lock.Chain{Challenge: cid, ChallengeMode: lock.Read})
	w := b.Records.Under(h)
	must(t, w.Reserve(ctx(t), cid, sid, identity))
	in := &store.Instance{ChallengeID: cid, SourceID: sid, Identity: identity, Since: t0, LastRenew: t0,
		ConnectionInfo: "nc " + identity, Flags: []string{"F{" + identity + "}"}, Project: "p", Digest: "sha256:x"}
	must(t, w.CommitInstance(ctx(t), in))
	must(t, h.Release(ctx(t)))
	return in
}

func challengeLifecycle(t *testing.T, b Backend) {
	c := ctx(t)
	w := b.Records.Under(nil)
	ch := addChallenge(t, b, "c")
	wantErr(t, w.CreateChallenge(c, &store.Challenge{ID: "c"}), store.ErrExists)
	wantErr(t, w.CreateChallenge(c, &store.Challenge{}), store.ErrInvalid)
	got, err := b.Records.GetChallenge(c, "c")
	must(t, err)
	if got.Rev != ch.Rev || got.Max != 4 {
		t.Fatalf("read %+v, created %+v", got, ch)
	}
	stale := *got
	got.Min = 2
	must(t, w.UpdateChallenge(c, got, nil))
	wantErr(t, w.UpdateChallenge(c, &stale, nil), store.ErrConflict)
	wantErr(t, w.UpdateChallenge(c, &store.Challenge{ID: "nope"}, nil), store.ErrNotFound)
	addInstance(t, b, "c", "s", "i1")
	wantErr(t, w.DeleteChallenge(c, "c"), store.ErrNotEmpty)
	must(t, w.RemoveInstance(c, "c", "i1"))
	must(t, w.DeleteChallenge(c, "c"))
	wantErr(t, w.DeleteChallenge(c, "c"), store.ErrNotFound)
	_, err = b.Records.GetChallenge(c, "c")
	wantErr(t, err, store.ErrNotFound)
}

func reservations(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	h := acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read})
	w := b.Records.Under(h)
	must(t, w.Reserve(c, "c", "s", "i1"))
	wantErr(t, w.Reserve(c, "c", "s", "i2"), store.ErrExists) // the source is taken
	wantErr(t, w.Reserve(c, "c", "t", "i1"), store.ErrExists) // the identity is taken
	wantErr(t, w.Reserve(c, "nope", "s", "i3"), store.ErrNotFound)
	if _, err := b.Records.InstanceBySource(c, "c", "s"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a reservation is not an instance: %v", err)
	}
	p, err := b.Records.ListPending(c, "c")
	must(t, err)
	if len(p) != 1 || p[0].Identity != "i1" || p[0].SourceID != "s" {
		t.Fatalf("pending %+v", p)
	}
	wantErr(t, w.CommitInstance(c, &store.Instance{ChallengeID: "c", SourceID: "s", Identity: "other"}), store.ErrNoReservation)
	in := &store.Instance{ChallengeID: "c", SourceID: "s", Identity: "i1", Since: t0, LastRenew: t0}
	must(t, w.CommitInstance(c, in))
	got, err := b.Records.InstanceBySource(c, "c", "s")
	must(t, err)
	if got.Identity != "i1" || got.Rev != in.Rev {
		t.Fatalf("committed %+v, read %+v", in, got)
	}
	if p, _ := b.Records.ListPending(c, ""); len(p) != 0 {
		t.Fatalf("pending after commit: %+v", p)
	}
	wantErr(t, w.Reserve(c, "c", "s", "i4"), store.ErrExists) // the source has an instance
	// A pool spin-up counts as reserved.
	must(t, w.Reserve(c, "c", "", "p1"))
	n, err := b.Records.PoolCounts(c, "c")
	must(t, err)
	if n != (store.ChallengeCounts{Claimed: 1, Total: 1, Reserved: 1}) {
		t.Fatalf("counts %+v", n)
	}
	// Unreserve forgets it.
	must(t, b.Records.Unreserve(c, "c", "", "p1"))
	if n, _ := b.Records.PoolCounts(c, "c"); n.Reserved != 0 {
		t.Fatalf("counts after unreserve %+v", n)
	}
}

func reservationsVanish(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	h, err := b.Locks.Acquire(c, lock.Chain{Challenge: "c", ChallengeMode: lock.Read})
	must(t, err)
	must(t, b.Records.Under(h).Reserve(c, "c", "s", "i1"))
	must(t, h.Release(c))
	deadline := time.Now().Add(patience)
	for {
		ids, err := b.Records.Identities(c)
		must(t, err)
		if !ids["i1"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the reservation outlived its locks")
		}
		time.Sleep(10 * time.Millisecond)
	}
	h2 := acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read})
	must(t, b.Records.Under(h2).Reserve(c, "c", "s", "i2")) // the source is free again
}

func poolClaims(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	for _, id := range []string{"c3", "a1", "b2"} {
		addInstance(t, b, "c", "", id)
	}
	w := b.Records.Under(nil)
	now := t0.Add(time.Minute)
	claim, err := w.ClaimPooled(c, "c", "s1", func(in *store.Instance) {
		in.LastRenew, in.Additional = now, map[string]string{"x": "y"}
		in.Since = now // ignored: since stays the pool creation time
	})
	must(t, err)
	in := claim.Instance
	if in.Identity != "a1" || in.SourceID != "s1" || !in.Since.Equal(t0) || !in.LastRenew.Equal(now) || in.Additional["x"] != "y" {
		t.Fatalf("claimed %+v", in)
	}
	if claim.PooledBefore != 3 || claim.Total != 3 {
		t.Fatalf("claim counted %d pooled before, %d in all", claim.PooledBefore, claim.Total)
	}
	_, err = w.ClaimPooled(c, "c", "s1", nil)
	wantErr(t, err, store.ErrExists)
	n, err := b.Records.PoolCounts(c, "c")
	must(t, err)
	if n != (store.ChallengeCounts{Claimed: 1, Pooled: 2, Total: 3}) {
		t.Fatalf("counts %+v", n)
	}
	// Concurrent claims: each pooled instance goes to exactly one source.
	var wg sync.WaitGroup
	got := make([]string, 4)
	for k := range 4 {
		wg.Go(func() {
			if cl, err := w.ClaimPooled(c, "c", fmt.Sprintf("r%d", k), nil); err == nil {
				got[k] = cl.Instance.Identity
			} else if !errors.Is(err, store.ErrPoolEmpty) {
				t.Errorf("claim %d: %v", k, err)
			}
		})
	}
	wg.Wait()
	var won []string
	for _, id := range got {
		if id != "" {
			won = append(won, id)
		}
	}
	slices.Sort(won)
	if !slices.Equal(won, []string{"b2", "c3"}) {
		t.Fatalf("concurrent claims got %v", won)
	}
	_, err = w.ClaimPooled(c, "c", "late", nil)
	wantErr(t, err, store.ErrPoolEmpty)
	wantErr(t, err, store.ErrNotFound)
}

func withdrawBeatsClaim(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	addInstance(t, b, "c", "", "p1")
	_, pooled, err := b.Records.Instances(c, "c")
	must(t, err)
	w := b.Records.Under(nil)
	must(t, w.Withdraw(c, pooled[0]))
	if !pooled[0].Draining {
		t.Fatal("withdrawn instance not marked draining")
	}
	_, err = w.ClaimPooled(c, "c", "s", nil)
	wantErr(t, err, store.ErrPoolEmpty)
	n, _ := b.Records.PoolCounts(c, "c")
	if n.Pooled != 0 || n.Total != 1 {
		t.Fatalf("counts after withdraw %+v", n)
	}
	// A claim first: the withdraw of the stale copy is refused.
	addInstance(t, b, "c", "", "p2")
	_, pooled, _ = b.Records.Instances(c, "c")
	var p2 *store.Instance
	for _, in := range pooled {
		if in.Identity == "p2" {
			p2 = in
		}
	}
	if _, err := w.ClaimPooled(c, "c", "s", nil); err != nil {
		t.Fatal(err)
	}
	wantErr(t, w.Withdraw(c, p2), store.ErrConflict)
}

func modifyAndRemove(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	addInstance(t, b, "c", "s", "id1")
	w := b.Records.Under(nil)
	// A renewal between an update's read and its commit is kept.
	_, err := w.ModifyInstance(c, "c", "id1", func(in *store.Instance) error { in.LastRenew = t0.Add(time.Hour); return nil })
	must(t, err)
	got, err := w.ModifyInstance(c, "c", "id1", func(in *store.Instance) error { in.ConnectionInfo = "nc updated"; return nil })
	must(t, err)
	if got.ConnectionInfo != "nc updated" || !got.LastRenew.Equal(t0.Add(time.Hour)) {
		t.Fatalf("modified %+v", got)
	}
	same, err := w.ModifyInstance(c, "c", "id1", func(*store.Instance) error { return store.ErrUnchanged })
	if err != nil || same.Rev != got.Rev {
		t.Fatalf("ErrUnchanged: %v, rev %d → %d", err, got.Rev, same.Rev)
	}
	boom := errors.New("boom")
	if _, err := w.ModifyInstance(c, "c", "id1", func(*store.Instance) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("change error: %v", err)
	}
	_, err = w.ModifyInstance(c, "c", "id1", func(in *store.Instance) error { in.SourceID = "other"; return nil })
	wantErr(t, err, store.ErrInvalid)
	// A move to another identity (blue-green).
	h := acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read})
	must(t, b.Records.Under(h).Reserve(c, "c", "", "id2"))
	moved, err := w.ModifyInstance(c, "c", "id1", func(in *store.Instance) error { in.Identity = "id2"; return nil })
	must(t, err)
	if bySrc, err := b.Records.InstanceBySource(c, "c", "s"); err != nil || bySrc.Identity != "id2" || bySrc.Rev != moved.Rev {
		t.Fatalf("after a move: %+v, %v", bySrc, err)
	}
	if ids, _ := b.Records.Identities(c); ids["id1"] || !ids["id2"] {
		t.Fatalf("identities after a move: %v", ids)
	}
	_, err = w.ModifyInstance(c, "c", "id1", func(*store.Instance) error { return nil })
	wantErr(t, err, store.ErrNotFound)
	// Remove whatever was written since; again is a no-op.
	_, err = w.ModifyInstance(c, "c", "id2", func(in *store.Instance) error { in.LastRenew = t0.Add(3 * time.Hour); return nil })
	must(t, err)
	must(t, w.RemoveInstance(c, "c", "id2"))
	must(t, w.RemoveInstance(c, "c", "id2"))
	if _, err := b.Records.InstanceBySource(c, "c", "s"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed instance still served: %v", err)
	}
	h2 := acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read})
	must(t, b.Records.Under(h2).Reserve(c, "c", "s", "again")) // the source is free again
}

func fencing(t *testing.T, b Backend) {
	c := ctx(t)
	ch := addChallenge(t, b, "c")
	addInstance(t, b, "c", "s", "i1")
	h, err := b.Locks.Acquire(c, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	must(t, err)
	defer h.Release(context.Background())
	w := b.Records.Under(h)
	cur, err := b.Records.GetChallenge(c, "c")
	must(t, err)
	must(t, w.UpdateChallenge(c, cur, nil)) // held: accepted
	b.Expire(t, h)
	cur, _ = b.Records.GetChallenge(c, "c")
	wantErr(t, w.UpdateChallenge(c, cur, nil), store.ErrFenced)
	_, err = w.ModifyInstance(c, "c", "i1", func(in *store.Instance) error { in.LastRenew = t0; return nil })
	wantErr(t, err, store.ErrFenced)
	wantErr(t, w.RemoveInstance(c, "c", "i1"), store.ErrFenced)
	wantErr(t, w.CreateChallenge(c, &store.Challenge{ID: "d"}), store.ErrFenced)
	_ = ch
	// Nothing was written.
	if _, err := b.Records.InstanceBySource(c, "c", "s"); err != nil {
		t.Fatalf("fenced remove removed: %v", err)
	}
	if _, err := b.Records.GetChallenge(c, "d"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("fenced create created: %v", err)
	}
}

func reads(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "b")
	addChallenge(t, b, "a")
	addInstance(t, b, "a", "s2", "a2")
	addInstance(t, b, "a", "s1", "a1")
	addInstance(t, b, "a", "", "ap")
	addInstance(t, b, "b", "s1", "b1")
	all, err := b.Records.AllChallenges(c)
	must(t, err)
	if len(all) != 2 || all[0].Challenge.ID != "a" || all[1].Challenge.ID != "b" {
		t.Fatalf("AllChallenges order: %+v", all)
	}
	if len(all[0].Claimed) != 2 || all[0].Claimed[0].SourceID != "s1" || len(all[0].Pooled) != 1 {
		t.Fatalf("snapshot of a: %+v", all[0])
	}
	ch, claimed, err := b.Records.ChallengeWithInstances(c, "a")
	must(t, err)
	if ch.ID != "a" || len(claimed) != 2 {
		t.Fatalf("ChallengeWithInstances: %+v %d", ch, len(claimed))
	}
	ins, cs, err := b.Records.SourceInstances(c, "s1")
	must(t, err)
	if len(ins) != 2 || ins[0].ChallengeID != "a" || ins[1].ChallengeID != "b" || cs["a"] == nil || cs["b"] == nil {
		t.Fatalf("SourceInstances: %+v %v", ins, cs)
	}
	if ch, in, err := b.Records.InstanceWithChallenge(c, "b", "s1"); err != nil || ch.ID != "b" || in.Identity != "b1" {
		t.Fatalf("InstanceWithChallenge: %v %v %v", ch, in, err)
	}
	if _, _, err := b.Records.InstanceWithChallenge(c, "b", "s2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("InstanceWithChallenge of nobody: %v", err)
	}
	ids, err := b.Records.Identities(c)
	must(t, err)
	if len(ids) != 4 || !ids["ap"] {
		t.Fatalf("Identities: %v", ids)
	}
	must(t, b.Records.PutMeta(c, "m", []byte("v")))
	if v, err := b.Records.GetMeta(c, "m"); err != nil || string(v) != "v" {
		t.Fatalf("meta: %q %v", v, err)
	}
	if v, err := b.Records.GetMeta(c, "none"); err != nil || v != nil {
		t.Fatalf("absent meta: %q %v", v, err)
	}
	// Reads return copies: changing one changes nothing stored.
	claimed[0].ConnectionInfo = "changed"
	if again, _ := b.Records.InstanceBySource(c, "a", claimed[0].SourceID); again.ConnectionInfo == "changed" {
		t.Fatal("a read shares memory with the store")
	}
}

// holdLater acquires c in a goroutine and reports on the channel when done.
func holdLater(b Backend, c lock.Chain) (<-chan manager.Held, <-chan error) {
	got, failed := make(chan manager.Held, 1), make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		h, err := b.Locks.Acquire(ctx, c)
		if err != nil {
			failed <- err
			return
		}
		got <- h
	}()
	return got, failed
}

// notYet fails when ch delivers within a short while.
func notYet(t *testing.T, ch <-chan manager.Held, what string) {
	t.Helper()
	select {
	case <-ch:
		t.Fatalf("%s granted while it must wait", what)
	case <-time.After(300 * time.Millisecond):
	}
}

func granted(t *testing.T, ch <-chan manager.Held, failed <-chan error, what string) manager.Held {
	t.Helper()
	select {
	case h := <-ch:
		return h
	case err := <-failed:
		t.Fatalf("%s: %v", what, err)
	case <-time.After(patience):
		t.Fatalf("%s never granted", what)
	}
	return nil
}

func writersExclude(t *testing.T, b Backend) {
	w := lock.Chain{Challenge: "c", ChallengeMode: lock.Write}
	h := acquire(t, b, w)
	got, failed := holdLater(b, w)
	notYet(t, got, "a second writer")
	must(t, h.Release(ctx(t)))
	h2 := granted(t, got, failed, "the second writer")
	must(t, h2.Release(ctx(t)))
}

func readersShare(t *testing.T, b Backend) {
	r := lock.Chain{Challenge: "c", ChallengeMode: lock.Read}
	h1 := acquire(t, b, r)
	h2 := acquire(t, b, r) // readers share
	got, failed := holdLater(b, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	notYet(t, got, "a writer behind readers")
	must(t, h1.Release(ctx(t)))
	notYet(t, got, "a writer behind one reader")
	must(t, h2.Release(ctx(t)))
	must(t, granted(t, got, failed, "the writer").Release(ctx(t)))
	// Another challenge is another lock.
	acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	acquire(t, b, lock.Chain{Challenge: "d", ChallengeMode: lock.Write})
}

func writerPreference(t *testing.T, b Backend) {
	r := lock.Chain{Challenge: "c", ChallengeMode: lock.Read}
	h := acquire(t, b, r)
	wGot, wFailed := holdLater(b, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	notYet(t, wGot, "the writer")
	// A reader arriving after a waiting writer waits for it.
	rGot, rFailed := holdLater(b, r)
	notYet(t, rGot, "a reader behind a waiting writer")
	must(t, h.Release(ctx(t)))
	wh := granted(t, wGot, wFailed, "the writer")
	notYet(t, rGot, "the reader while the writer holds")
	must(t, wh.Release(ctx(t)))
	must(t, granted(t, rGot, rFailed, "the reader").Release(ctx(t)))
}

func cancelledWait(t *testing.T, b Backend) {
	w := lock.Chain{Challenge: "c", ChallengeMode: lock.Write, Instance: "i", InstanceMode: lock.Write}
	h := acquire(t, b, w)
	c, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Locks.Acquire(c, w)
		done <- err
	}()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		wantErr(t, err, context.Canceled)
	case <-time.After(patience):
		t.Fatal("a cancelled wait did not return")
	}
	must(t, h.Release(ctx(t)))
	// Its place was given back: the chain is free at once.
	must(t, acquire(t, b, w).Release(ctx(t)))
	if busy, err := b.Locks.InstanceBusy(ctx(t), "c", "i"); err != nil || busy {
		t.Fatalf("busy after every release: %v %v", busy, err)
	}
}

func releaseChallenge(t *testing.T, b Backend) {
	h := acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i", InstanceMode: lock.Write})
	got, failed := holdLater(b, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	notYet(t, got, "the challenge writer")
	must(t, h.ReleaseChallenge(ctx(t)))
	must(t, granted(t, got, failed, "the challenge writer after ReleaseChallenge").Release(ctx(t)))
	iGot, iFailed := holdLater(b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i", InstanceMode: lock.Write})
	notYet(t, iGot, "the instance while still held")
	must(t, h.Release(ctx(t)))
	must(t, granted(t, iGot, iFailed, "the instance").Release(ctx(t)))
}

func tryLockAndBusy(t *testing.T, b Backend) {
	c := ctx(t)
	h, err := b.Locks.TryLock(c, "janitor")
	must(t, err)
	if _, err := b.Locks.TryLock(c, "janitor"); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("second TryLock: %v", err)
	}
	must(t, h.Release(c))
	h, err = b.Locks.TryLock(c, "janitor")
	must(t, err)
	must(t, h.Release(c))
	if busy, _ := b.Locks.InstanceBusy(c, "c", "pool"); busy {
		t.Fatal("busy with nobody")
	}
	acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "pool", InstanceMode: lock.Write})
	if busy, _ := b.Locks.InstanceBusy(c, "c", "pool"); !busy {
		t.Fatal("not busy while held")
	}
}

// quietFences: a write under Quiet applies when no conflicting lock is held
// or waited for at a level of its chain, and is ErrFenced otherwise.
func quietFences(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	in := addInstance(t, b, "c", "s", "i1")
	renew := func(chain lock.Chain) error {
		q, err := b.Locks.Quiet(chain)
		must(t, err)
		_, err = b.Records.Under(q).ModifyInstance(c, "c", in.Identity, func(in *store.Instance) error { in.LastRenew = t0.Add(time.Minute); return nil })
		return err
	}
	inst := lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i1", InstanceMode: lock.Write}
	must(t, renew(inst)) // nobody at work
	for _, tc := range []struct {
		name   string
		holder lock.Chain
		want   error
	}{
		{"challenge reader", lock.Chain{Challenge: "c", ChallengeMode: lock.Read}, nil},
		{"challenge writer", lock.Chain{Challenge: "c", ChallengeMode: lock.Write}, store.ErrFenced},
		{"instance reader", lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i1", InstanceMode: lock.Read}, store.ErrFenced},
		{"instance writer", inst, store.ErrFenced},
		{"other instance", lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i2", InstanceMode: lock.Write}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := acquire(t, b, tc.holder)
			if err := renew(inst); !errors.Is(err, tc.want) && (err != nil || tc.want != nil) {
				t.Fatalf("write under Quiet while a %s holds: %v, want %v", tc.name, err, tc.want)
			}
			must(t, h.Release(context.Background()))
			must(t, renew(inst)) // free again
		})
	}
	// Nothing to release, and no lock left behind.
	q, err := b.Locks.Quiet(inst)
	must(t, err)
	must(t, q.Release(c))
	h := acquire(t, b, lock.Chain{Challenge: "c", ChallengeMode: lock.Write})
	must(t, h.Release(c))
}

// hotWrites: RenewInstance and ClaimWithChallenge write only the records
// they read: a change of the instance or of its challenge in between is
// ErrFenced, and nothing is written.
func hotWrites(t *testing.T, b Backend) {
	c := ctx(t)
	addChallenge(t, b, "c")
	addInstance(t, b, "c", "s", "i1")
	ch, in, err := b.Records.InstanceWithChallenge(c, "c", "s")
	must(t, err)
	w := b.Records.Under(nil)
	got, err := w.RenewInstance(c, ch, in, t0.Add(time.Hour))
	must(t, err)
	if !got.LastRenew.Equal(t0.Add(time.Hour)) {
		t.Fatalf("renewed LastRenew %v", got.LastRenew)
	}
	// The record a renewal returns is current: the next one may start from it.
	got, err = w.RenewInstance(c, ch, got, t0.Add(90*time.Minute))
	must(t, err)
	// in is stale now: refused, with the current records.
	_, err = w.RenewInstance(c, ch, in, t0.Add(2*time.Hour))
	wantErr(t, err, store.ErrFenced)
	wantStale(t, err, ch.Rev, got.Rev)
	// A challenge changed since it was read: refused, with the current one.
	ch, in, err = b.Records.InstanceWithChallenge(c, "c", "s")
	must(t, err)
	cur, err := b.Records.GetChallenge(c, "c")
	must(t, err)
	must(t, w.UpdateChallenge(c, cur, nil))
	_, err = w.RenewInstance(c, ch, in, t0.Add(3*time.Hour))
	st := wantStale(t, err, cur.Rev, in.Rev)
	if now, _ := b.Records.InstanceBySource(c, "c", "s"); !now.LastRenew.Equal(t0.Add(90 * time.Minute)) {
		t.Fatalf("a refused renewal wrote: LastRenew %v", now.LastRenew)
	}
	// The records a refusal carries are the ones to try again with.
	got, err = w.RenewInstance(c, st.Challenge, st.Instance, t0.Add(3*time.Hour))
	must(t, err)
	if !got.LastRenew.Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("renewed LastRenew %v", got.LastRenew)
	}

	// Claims: the check sees the challenge and can refuse; a claim is made
	// once; an empty pool says so.
	addPooled(t, b, "c", "p1")
	for _, id := range []string{"p2", "p3"} {
		addPooled(t, b, "c", id)
	}
	refuse := errors.New("refused")
	accept := func(*store.Challenge) error { return nil }
	_, _, err = w.ClaimWithChallenge(c, "c", "t", nil, func(*store.Challenge) error { return refuse }, nil)
	wantErr(t, err, refuse)
	seen, claim, err := w.ClaimWithChallenge(c, "c", "t", nil, accept,
		func(in *store.Instance) { in.LastRenew = t0.Add(time.Hour) })
	must(t, err)
	if seen.ID != "c" || claim.Instance.Identity != "p1" || claim.Instance.SourceID != "t" || !claim.Instance.LastRenew.Equal(t0.Add(time.Hour)) {
		t.Fatalf("claim %+v of %+v", claim.Instance, seen)
	}
	// The next claim may start from what the last one saw; once the
	// challenge changed, the check judges the current one.
	seen, claim, err = w.ClaimWithChallenge(c, "c", "u", claim.Next, accept, nil)
	must(t, err)
	if claim.Instance.SourceID != "u" || claim.Instance.Identity == "p1" {
		t.Fatalf("claim with a hint: %+v", claim.Instance)
	}
	cur, err = b.Records.GetChallenge(c, "c")
	must(t, err)
	must(t, w.UpdateChallenge(c, cur, nil))
	var checked []int64
	_, _, err = w.ClaimWithChallenge(c, "c", "v", claim.Next, func(ch *store.Challenge) error {
		checked = append(checked, ch.Rev)
		if ch.Rev != seen.Rev {
			return refuse
		}
		return nil
	}, nil)
	wantErr(t, err, refuse)
	if len(checked) == 0 || checked[len(checked)-1] != cur.Rev {
		t.Fatalf("checked revisions %v, want the current %d last", checked, cur.Rev)
	}
	_, _, err = w.ClaimWithChallenge(c, "c", "v", nil, accept, nil)
	must(t, err)
	_, _, err = w.ClaimWithChallenge(c, "c", "w", nil, accept, nil)
	wantErr(t, err, store.ErrPoolEmpty)
	_, _, err = w.ClaimWithChallenge(c, "nope", "w", nil, accept, nil)
	wantErr(t, err, store.ErrNotFound)
}

// wantStale asserts err is a *store.Stale carrying the records at these
// revisions.
func wantStale(t *testing.T, err error, challengeRev, instanceRev int64) *store.Stale {
	t.Helper()
	var st *store.Stale
	if !errors.As(err, &st) || !errors.Is(err, store.ErrFenced) {
		t.Fatalf("error %v, want a *store.Stale (ErrFenced)", err)
	}
	if st.Challenge == nil || st.Challenge.Rev != challengeRev || st.Instance == nil || st.Instance.Rev != instanceRev {
		t.Fatalf("stale carries %+v and %+v, want revisions %d and %d", st.Challenge, st.Instance, challengeRev, instanceRev)
	}
	return st
}

// addPooled adds a pooled instance the way a fill does.
func addPooled(t *testing.T, b Backend, cid, identity string) {
	t.Helper()
	h := acquire(t, b, lock.Chain{Challenge: cid, ChallengeMode: lock.Read})
	must(t, b.Records.Under(h).Reserve(ctx(t), cid, "", identity))
	must(t, b.Records.Under(h).CommitInstance(ctx(t), &store.Instance{ChallengeID: cid, Identity: identity, Since: t0, LastRenew: t0, Project: "p", Digest: "sha256:x"}))
	must(t, h.Release(ctx(t)))
}
