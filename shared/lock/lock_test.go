package lock_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/etcd/etcdtest"
	"github.com/challfn/challfn/shared/lock"
)

const prefix = "/t"

// patience bounds every wait of a test so that a deadlock fails the test
// instead of hanging it; it is not a speed requirement.
const patience = 60 * time.Second

func newLocker(t *testing.T, o lock.Options) (*lock.Locker, *clientv3.Client) {
	t.Helper()
	cli := etcdtest.Start(t)
	o.Prefix = prefix
	return lock.New(cli, o), cli
}

func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

// lockKeys lists the lock keys currently in etcd.
func lockKeys(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix+"/lock/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// awaitKeys polls until n lock keys starting with /t/lock/<under> exist (a
// waiter has enqueued at that level).
func awaitKeys(t *testing.T, cli *clientv3.Client, under string, n int) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		got := 0
		for _, k := range lockKeys(t, cli) {
			if strings.HasPrefix(k, prefix+"/lock/"+under) {
				got++
			}
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never saw %d lock keys under %s, have %v", n, under, lockKeys(t, cli))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustAcquire(t *testing.T, l *lock.Locker, c lock.Chain) *lock.Held {
	t.Helper()
	h, err := l.Acquire(bounded(t), c)
	if err != nil {
		t.Fatalf("acquire %+v: %v", c, err)
	}
	return h
}

func TestWritersExcludeWithinOneProcess(t *testing.T) {
	l, _ := newLocker(t, lock.Options{})
	for _, tc := range []struct {
		name  string
		chain lock.Chain
	}{
		{"challenge writer", lock.Chain{Challenge: "c1", ChallengeMode: lock.Write}},
		{"instance writer under challenge reader", lock.Chain{Challenge: "c1", ChallengeMode: lock.Read, Instance: "i1", InstanceMode: lock.Write}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 50
			var counter, inside, overlaps atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for range n {
				wg.Go(func() {
					h, err := l.Acquire(bounded(t), tc.chain)
					if err != nil {
						errs <- err
						return
					}
					if inside.Add(1) != 1 {
						overlaps.Add(1)
					}
					// Non-atomic read-modify-write: loses updates unless exclusive.
					v := counter.Load()
					runtime.Gosched()
					time.Sleep(time.Millisecond)
					counter.Store(v + 1)
					inside.Add(-1)
					errs <- h.Release(context.Background())
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			if counter.Load() != n || overlaps.Load() != 0 {
				t.Fatalf("counter = %d (want %d), overlaps = %d", counter.Load(), n, overlaps.Load())
			}
		})
	}
}

func TestReadersShare(t *testing.T) {
	var mu sync.Mutex
	var waits []string
	l, _ := newLocker(t, lock.Options{Hook: func(ctx context.Context, name string) (context.Context, func()) {
		mu.Lock()
		waits = append(waits, name)
		mu.Unlock()
		return ctx, func() {}
	}})
	c := lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i", InstanceMode: lock.Read}
	a := mustAcquire(t, l, c)
	b := mustAcquire(t, l, c)
	defer a.Release(context.Background())
	defer b.Release(context.Background())
	mu.Lock()
	defer mu.Unlock()
	for _, w := range waits {
		if w != lock.SpanAcquire {
			t.Fatalf("a reader waited (%s) while only readers held the lock", w)
		}
	}
}

func TestWriterPreference(t *testing.T) {
	l, cli := newLocker(t, lock.Options{})
	r := lock.Chain{Challenge: "c", ChallengeMode: lock.Read}
	w := lock.Chain{Challenge: "c", ChallengeMode: lock.Write}
	first := mustAcquire(t, l, r)

	var mu sync.Mutex
	var order []string
	got := func(name string, c lock.Chain) chan error {
		done := make(chan error, 1)
		go func() {
			h, err := l.Acquire(bounded(t), c)
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			time.Sleep(10 * time.Millisecond)
			done <- h.Release(context.Background())
		}()
		return done
	}
	wDone := got("writer", w)
	awaitKeys(t, cli, "c/c/w/", 1) // writer enqueued behind the first reader
	rDone := got("late reader", r)
	awaitKeys(t, cli, "c/c/r/", 2) // late reader enqueued behind the writer
	if err := first.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []chan error{wDone, rDone} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(order, []string{"writer", "late reader"}) {
		t.Fatalf("acquisition order %v: a reader arriving after a waiting writer went first", order)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	for _, tc := range []struct {
		name           string
		holder, waiter lock.Chain
		waitsAt        string // the level directory where the waiter waits
	}{
		{"writer behind writer", lock.Chain{Challenge: "c", ChallengeMode: lock.Write}, lock.Chain{Challenge: "c", ChallengeMode: lock.Write}, "c/c/"},
		{"reader behind writer", lock.Chain{Challenge: "c", ChallengeMode: lock.Write}, lock.Chain{Challenge: "c", ChallengeMode: lock.Read}, "c/c/"},
		{"instance", lock.Chain{Challenge: "c", Instance: "i", InstanceMode: lock.Write}, lock.Chain{Challenge: "c", Instance: "i", InstanceMode: lock.Write}, "i/c/i/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, cli := newLocker(t, lock.Options{})
			h := mustAcquire(t, l, tc.holder)
			held := lockKeys(t, cli)
			ctx, cancel := context.WithCancel(bounded(t))
			done := make(chan error, 1)
			go func() {
				w, err := l.Acquire(ctx, tc.waiter)
				if err == nil {
					_ = w.Release(context.Background())
				}
				done <- err
			}()
			awaitKeys(t, cli, tc.waitsAt, 2)
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Fatalf("waiter returned %v, want context.Canceled", err)
			}
			if got := lockKeys(t, cli); !slices.Equal(got, held) {
				t.Fatalf("after cancel keys are %v, want the holder's %v", got, held)
			}
			if err := h.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got := lockKeys(t, cli); len(got) != 0 {
				t.Fatalf("after release keys remain: %v", got)
			}
		})
	}
}

func TestLeaseExpiryFreesCrashedHolder(t *testing.T) {
	l, cli := newLocker(t, lock.Options{TTL: 2 * time.Second})
	c := lock.Chain{Challenge: "c", ChallengeMode: lock.Write, Instance: "i", InstanceMode: lock.Write}
	crashCtx, crash := context.WithCancel(context.Background())
	crashed, err := l.Acquire(crashCtx, c)
	if err != nil {
		t.Fatal(err)
	}
	crash() // keep-alive stops, nothing is revoked: as if the process froze
	_ = crashed
	if len(lockKeys(t, cli)) == 0 {
		t.Fatal("keys vanished before the lease expired")
	}
	next := mustAcquire(t, l, c) // waits for the lease to expire
	if err := next.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestFenceFailsOnceLeaseLost(t *testing.T) {
	l, cli := newLocker(t, lock.Options{})
	h := mustAcquire(t, l, lock.Chain{Challenge: "c", ChallengeMode: lock.Write, Instance: "i", InstanceMode: lock.Write})
	ctx := context.Background()
	put := func() bool {
		resp, err := cli.Txn(ctx).If(h.Fence()...).Then(clientv3.OpPut("/t/data", "x")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}
	if len(h.Fence()) != 2 {
		t.Fatalf("fence has %d compares, want 2 (challenge and instance)", len(h.Fence()))
	}
	if !put() {
		t.Fatal("fenced write failed while holding the lock")
	}
	if _, err := cli.Revoke(ctx, h.Lease()); err != nil { // the lease is lost behind the holder's back
		t.Fatal(err)
	}
	if put() {
		t.Fatal("fenced write succeeded after the lease was lost")
	}
	_ = h.Release(ctx)
}

func TestReleaseChallengeKeepsInstance(t *testing.T) {
	l, cli := newLocker(t, lock.Options{})
	h := mustAcquire(t, l, lock.Chain{Challenge: "c", ChallengeMode: lock.Read, Instance: "i", InstanceMode: lock.Read})
	if err := h.ReleaseChallenge(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(h.Fence()) != 1 {
		t.Fatalf("fence has %d compares after ReleaseChallenge, want 1", len(h.Fence()))
	}
	w := mustAcquire(t, l, lock.Chain{Challenge: "c", ChallengeMode: lock.Write}) // challenge is free
	_ = w.Release(context.Background())

	ctx, cancel := context.WithCancel(bounded(t))
	done := make(chan error, 1)
	go func() {
		_, err := l.Acquire(ctx, lock.Chain{Challenge: "c", Instance: "i", InstanceMode: lock.Write})
		done <- err
	}()
	awaitKeys(t, cli, "i/c/i/", 2) // the waiter enqueued behind the instance reader
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("instance writer did not wait for the instance reader: %v", err)
	}
	_ = h.Release(context.Background())
}

func TestTryLock(t *testing.T) {
	l, _ := newLocker(t, lock.Options{})
	ctx := context.Background()
	a, err := l.TryLock(ctx, "janitor")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TryLock(ctx, "janitor"); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("second TryLock: %v, want ErrLocked", err)
	}
	if b, err := l.TryLock(ctx, "other"); err != nil {
		t.Fatalf("TryLock of another name: %v", err)
	} else {
		_ = b.Release(ctx)
	}
	_ = a.Release(ctx)
	b, err := l.TryLock(ctx, "janitor")
	if err != nil {
		t.Fatalf("TryLock after release: %v", err)
	}
	_ = b.Release(ctx)
}

func TestChainValidation(t *testing.T) {
	l, _ := newLocker(t, lock.Options{})
	for _, c := range []lock.Chain{
		{},
		{Instance: "i"},
	} {
		if _, err := l.Acquire(context.Background(), c); !errors.Is(err, lock.ErrChain) {
			t.Errorf("Acquire(%+v) = %v, want ErrChain", c, err)
		}
	}
}

func TestUncontendedRoundTrips(t *testing.T) {
	srv := etcdtest.Server(t)
	var n etcd.Counter
	cli := etcdtest.Client(t, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	l := lock.New(cli, lock.Options{Prefix: prefix})
	for _, c := range []lock.Chain{
		{Challenge: "c", ChallengeMode: lock.Write},
		{Challenge: "c", Instance: "i", InstanceMode: lock.Write},
	} {
		before := n.Unary()
		h := mustAcquire(t, l, c)
		if err := h.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := n.Unary() - before; got > 3 {
			t.Errorf("chain %+v took %d round trips, want ≤ 3", c, got)
		}
	}
}

// TestNoDeadlockRandomMix runs challenge readers and writers and instance
// operations at random and
// checks both that everything finishes and that no two conflicting holders
// ever overlap.
func TestNoDeadlockRandomMix(t *testing.T) {
	l, cli := newLocker(t, lock.Options{})
	challenges := []string{"a", "b", "c"}
	instances := []string{"1", "2"}

	// Per resource: readers count up from 0, a writer sets -1.
	var mu sync.Mutex
	state := map[string]int{}
	enter := func(res string, m lock.Mode) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case m == lock.Write && state[res] != 0, m == lock.Read && state[res] < 0:
			return fmt.Errorf("%s entered in %s mode while state is %d", res, m, state[res])
		case m == lock.Write:
			state[res] = -1
		default:
			state[res]++
		}
		return nil
	}
	leave := func(res string, m lock.Mode) {
		mu.Lock()
		defer mu.Unlock()
		if m == lock.Write {
			state[res] = 0
		} else {
			state[res]--
		}
	}

	op := func(ctx context.Context, r *rand.Rand) error {
		ch := challenges[r.IntN(len(challenges))]
		in := instances[r.IntN(len(instances))]
		var held []func()
		var h *lock.Held
		var err error
		hold := func(res string, m lock.Mode) error {
			if err := enter(res, m); err != nil {
				return err
			}
			held = append(held, func() { leave(res, m) })
			return nil
		}
		switch kind := 1 + r.IntN(4); kind {
		case 1, 2: // challenge read or write
			m := lock.Mode(kind)
			if h, err = l.Acquire(ctx, lock.Chain{Challenge: ch, ChallengeMode: m}); err != nil {
				return err
			}
			if err := hold("c/"+ch, m); err != nil {
				return err
			}
		default: // instance write, sometimes dropping the challenge early
			if h, err = l.Acquire(ctx, lock.Chain{Challenge: ch, Instance: in, InstanceMode: lock.Write}); err != nil {
				return err
			}
			if err := hold("c/"+ch, lock.Read); err != nil {
				return err
			}
			if err := hold("i/"+ch+"/"+in, lock.Write); err != nil {
				return err
			}
			if kind == 4 {
				held[0]()
				held = held[1:]
				if err := h.ReleaseChallenge(ctx); err != nil {
					return err
				}
			}
		}
		time.Sleep(time.Duration(r.IntN(3)) * time.Millisecond)
		for _, f := range held {
			f()
		}
		return h.Release(ctx)
	}

	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 42))
			for range each {
				if err := op(bounded(t), r); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if keys := lockKeys(t, cli); len(keys) != 0 {
		t.Fatalf("keys left behind: %v", keys)
	}
}
