// Package lock is the global → challenge → instance readers/writer lock chain
// of the contract (docs/contract.md §6) on etcd, fixed where upstream is wrong.
//
// Every acquisition grants its own short lease (TTL = recovery time after a
// crash) kept alive by the acquiring request only, and writes its own keys,
// one per level it holds:
//
//	<prefix>/lock/g/<r|w>/<lease hex>                         global ("top of the world")
//	<prefix>/lock/c/<challenge>/<r|w>/<lease hex>              challenge
//	<prefix>/lock/i/<challenge>/<identity>/<r|w>/<lease hex>   instance
//	<prefix>/lock/s/<name>/w/<lease hex>                       singleton (TryLock)
//
// Level directories never nest (c/ and i/ are siblings), so a prefix range
// of one level never sees another. Because keys are per acquisition (not per
// etcd session, unlike concurrency.Mutex), two goroutines of one process
// exclude each other like two processes do.
//
// Order at a level is the etcd create revision (FIFO). A reader waits for
// the earlier writers of its level, a writer for every earlier key: a
// waiting writer therefore blocks readers arriving after it (writer
// preference). A waiter watches the deletion of its latest conflicting
// predecessor, then looks again.
//
// Uncontended, a whole chain is taken in one transaction whose compares say
// "no conflicting key at any level" (a range compare on CreateRevision = 0),
// so a chain costs 3 round trips: grant, txn, revoke. Holding the global
// reader lock for the instant of that transaction is unobservable, so it is
// not written. Otherwise the chain is taken level by level: a level is
// enqueued only while the level above is held (this order is what prevents
// deadlocks), and the global reader key is deleted in the same transaction
// that enqueues at the challenge level. Deleting it on enqueue rather than on
// grant keeps a query (global writer) from waiting behind a challenge wait
// that may last a whole deployment; the order at the challenge level is
// already fixed by then.
//
// Release revokes the lease, which deletes every key at once. If that fails
// (etcd unreachable, process frozen or killed), the keep-alive is gone and the
// lease expires after TTL, freeing the locks.
package lock

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Mode of a level in a chain.
type Mode int

const (
	None  Mode = iota // level not taken
	Read              // shared
	Write             // exclusive
)

func (m Mode) String() string {
	switch m {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return "none"
}

// Defaults.
const (
	DefaultPrefix = "/challfn"
	DefaultTTL    = 10 * time.Second
)

// Span names given to the Hook.
const (
	SpanAcquire = "lock.acquire"
	// Waits are named "lock.wait.<global|challenge|instance>.<read|write>",
	// see WaitName.
)

// WaitName is the name of a wait at a level ("global", "challenge",
// "instance") in a mode.
func WaitName(level string, m Mode) string { return "lock.wait." + level + "." + m.String() }

// Errors.
var (
	ErrLocked    = errors.New("lock: already locked")
	ErrLeaseLost = errors.New("lock: lease lost")
	ErrReleased  = errors.New("lock: already released")
	ErrChain     = errors.New("lock: invalid chain")
)

// Hook lets telemetry wrap acquisitions and waits in spans: it is called
// when one starts, and the returned func when it ends.
type Hook func(ctx context.Context, name string) (context.Context, func())

// Options of a Locker.
type Options struct {
	Prefix string        // key prefix, DefaultPrefix if empty
	TTL    time.Duration // lease TTL, DefaultTTL if zero; rounded up to seconds
	Hook   Hook          // optional
}

// Locker takes lock chains. It is safe for concurrent use; keep one per
// process.
type Locker struct {
	cli    *clientv3.Client
	dir    string // <prefix>/lock/
	ttl    int64
	hook   Hook
	txnMax int
}

// New returns a Locker using cli.
func New(cli *clientv3.Client, o Options) *Locker {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	ttl := int64((o.TTL + time.Second - 1) / time.Second)
	return &Locker{
		cli:    cli,
		dir:    strings.TrimSuffix(o.Prefix, "/") + "/lock/",
		ttl:    ttl,
		hook:   o.Hook,
		txnMax: 100, // etcd's default --max-txn-ops is 128
	}
}

// Chain names the levels an operation locks (docs/contract.md §6.2). The global
// level is implied in Read mode (held for an instant) whenever Challenge is
// set; Global: Write without Challenge is the "stop the world" lock of
// queries, held until Release (see Held.LockChallenges). A level given with
// mode None is taken in Read mode.
type Chain struct {
	Global        Mode
	Challenge     string
	ChallengeMode Mode
	Instance      string // identity; needs Challenge
	InstanceMode  Mode
}

type level struct {
	name string // global, challenge, instance
	dir  string // ends with /
	mode Mode
}

func (lv level) key(lease clientv3.LeaseID) string {
	m := "r/"
	if lv.mode == Write {
		m = "w/"
	}
	return fmt.Sprintf("%s%s%016x", lv.dir, m, int64(lease))
}

// conflicts is the range of keys this level's request must wait for.
func (lv level) conflicts() string {
	if lv.mode == Write {
		return lv.dir
	}
	return lv.dir + "w/"
}

func (lv level) free() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(lv.conflicts()), "=", 0).WithPrefix()
}

func seg(s string) string { return url.PathEscape(s) }

func (l *Locker) global(m Mode) level { return level{"global", l.dir + "g/", m} }
func (l *Locker) challenge(id string, m Mode) level {
	return level{"challenge", l.dir + "c/" + seg(id) + "/", orRead(m)}
}
func (l *Locker) instance(id, identity string, m Mode) level {
	return level{"instance", l.dir + "i/" + seg(id) + "/" + seg(identity) + "/", orRead(m)}
}

func orRead(m Mode) Mode {
	if m == None {
		return Read
	}
	return m
}

func (l *Locker) levels(c Chain) ([]level, error) {
	switch {
	case c.Challenge == "" && c.Instance != "":
		return nil, fmt.Errorf("%w: instance %q without challenge", ErrChain, c.Instance)
	case c.Challenge == "" && c.Global != Write:
		return nil, fmt.Errorf("%w: nothing to lock", ErrChain)
	case c.Challenge != "" && c.Global == Write:
		return nil, fmt.Errorf("%w: global writer with a challenge (use Held.LockChallenges)", ErrChain)
	case c.Challenge == "":
		return []level{l.global(Write)}, nil
	}
	lv := []level{l.global(Read), l.challenge(c.Challenge, c.ChallengeMode)}
	if c.Instance != "" {
		lv = append(lv, l.instance(c.Challenge, c.Instance, c.InstanceMode))
	}
	return lv, nil
}

func (l *Locker) span(ctx context.Context, name string) (context.Context, func()) {
	if l.hook == nil {
		return ctx, func() {}
	}
	return l.hook(ctx, name)
}

// Held is an acquired chain. Its lease is kept alive until Release or until
// the ctx given to Acquire ends: pass a ctx that lives as long as the work
// protected by the lock.
type Held struct {
	l      *Locker
	lease  clientv3.LeaseID
	stopKA context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	keys     []heldKey
	released bool
}

type heldKey struct {
	level string
	key   string
	rev   int64
}

// Acquire takes the chain c, waiting as long as needed and ctx allows. A
// cancelled wait removes every key of this acquisition and returns an error
// wrapping ctx.Err().
func (l *Locker) Acquire(ctx context.Context, c Chain) (_ *Held, err error) {
	lvs, err := l.levels(c)
	if err != nil {
		return nil, err
	}
	ctx, end := l.span(ctx, SpanAcquire)
	defer end()
	h, err := l.grant(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			h.abort(ctx)
		}
	}()

	// Fast path: the whole chain in one transaction. If it fails, its else
	// branch enqueues at the global level, so the slow path starts one round
	// trip ahead.
	stay := lvs[1:]
	if len(lvs) == 1 {
		stay = lvs
	}
	cmps := make([]clientv3.Cmp, 0, len(lvs))
	for _, lv := range lvs {
		cmps = append(cmps, lv.free())
	}
	puts := make([]clientv3.Op, 0, len(stay))
	for _, lv := range stay {
		puts = append(puts, clientv3.OpPut(lv.key(h.lease), "", clientv3.WithLease(h.lease)))
	}
	g := lvs[0]
	resp, err := l.cli.Txn(ctx).If(cmps...).Then(puts...).
		Else(clientv3.OpPut(g.key(h.lease), "", clientv3.WithLease(h.lease)), predecessorOp(g)).Commit()
	if err != nil {
		return nil, fmt.Errorf("lock: acquire: %w", err)
	}
	rev := resp.Header.Revision
	if resp.Succeeded {
		for _, lv := range stay {
			h.keys = append(h.keys, heldKey{lv.name, lv.key(h.lease), rev})
		}
		return h, nil
	}

	// Slow path, level by level.
	h.keys = append(h.keys, heldKey{g.name, g.key(h.lease), rev})
	if err := h.wait(ctx, g, rev, predecessor(resp.Responses[1].GetResponseRange(), rev)); err != nil {
		return nil, err
	}
	for i, lv := range lvs[1:] {
		ops := []clientv3.Op{clientv3.OpPut(lv.key(h.lease), "", clientv3.WithLease(h.lease)), predecessorOp(lv)}
		if i == 0 {
			ops = append(ops, clientv3.OpDelete(g.key(h.lease)))
		}
		resp, err := l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return nil, fmt.Errorf("lock: enqueue at %s: %w", lv.name, err)
		}
		rev := resp.Header.Revision
		if i == 0 {
			h.keys = h.keys[:0]
		}
		h.keys = append(h.keys, heldKey{lv.name, lv.key(h.lease), rev})
		if err := h.wait(ctx, lv, rev, predecessor(resp.Responses[1].GetResponseRange(), rev)); err != nil {
			return nil, err
		}
	}
	return h, nil
}

// InstanceBusy reports whether anyone holds or waits for an instance-level
// lock of challenge (identity, or a name such as the pool's). Work that
// someone else is already doing, and that a scheduler asks for again
// anyway, can then step aside instead of queueing behind it.
func (l *Locker) InstanceBusy(ctx context.Context, challenge, identity string) (bool, error) {
	lv := l.instance(challenge, identity, Read)
	resp, err := l.cli.Get(ctx, lv.dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("lock: busy %s/%s: %w", challenge, identity, err)
	}
	return resp.Count > 0, nil
}

// TryLock takes the singleton lock name in writer mode without waiting;
// ErrLocked when someone holds it.
func (l *Locker) TryLock(ctx context.Context, name string) (_ *Held, err error) {
	h, err := l.grant(ctx)
	if err != nil {
		return nil, err
	}
	lv := level{"singleton", l.dir + "s/" + seg(name) + "/", Write}
	resp, err := l.cli.Txn(ctx).If(lv.free()).Then(clientv3.OpPut(lv.key(h.lease), "", clientv3.WithLease(h.lease))).Commit()
	switch {
	case err != nil:
		err = fmt.Errorf("lock: trylock %s: %w", name, err)
	case !resp.Succeeded:
		err = fmt.Errorf("%w: %s", ErrLocked, name)
	}
	if err != nil {
		h.abort(ctx)
		return nil, err
	}
	h.keys = append(h.keys, heldKey{lv.name, lv.key(h.lease), resp.Header.Revision})
	return h, nil
}

func (l *Locker) grant(ctx context.Context) (*Held, error) {
	lease, err := l.cli.Grant(ctx, l.ttl)
	if err != nil {
		return nil, fmt.Errorf("lock: grant lease: %w", err)
	}
	kactx, stop := context.WithCancel(ctx)
	ch, err := l.cli.KeepAlive(kactx, lease.ID)
	if err != nil {
		stop()
		_, _ = l.cli.Revoke(context.WithoutCancel(ctx), lease.ID)
		return nil, fmt.Errorf("lock: keep lease alive: %w", err)
	}
	h := &Held{l: l, lease: lease.ID, stopKA: stop, done: make(chan struct{})}
	go func() {
		// The channel closes when kactx ends or the lease is lost.
		for range ch {
		}
		close(h.done)
	}()
	return h, nil
}

// abort frees everything after a failed acquisition, even when ctx is done.
func (h *Held) abort(ctx context.Context) {
	_ = h.Release(ctx)
}

// predecessorOp reads the latest keys of lv's conflict range; with the put
// of the same transaction it tells the waiter whom to wait for.
func predecessorOp(lv level) clientv3.Op {
	return clientv3.OpGet(lv.conflicts(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))
}

func predecessor(r *etcdserverpb.RangeResponse, rev int64) *mvccpb.KeyValue {
	if r == nil {
		return nil
	}
	for _, kv := range r.Kvs {
		if kv.CreateRevision < rev {
			return kv
		}
	}
	return nil
}

// wait blocks until no key conflicting with lv created before rev remains.
func (h *Held) wait(ctx context.Context, lv level, rev int64, pred *mvccpb.KeyValue) error {
	if pred == nil {
		return nil
	}
	ctx, end := h.l.span(ctx, WaitName(lv.name, lv.mode))
	defer end()
	seen := pred.ModRevision
	for pred != nil {
		if err := h.waitDeleted(ctx, lv, string(pred.Key), seen); err != nil {
			return err
		}
		resp, err := h.l.cli.Get(ctx, lv.conflicts(), clientv3.WithPrefix(), clientv3.WithMaxCreateRev(rev-1),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), err)
		}
		pred = nil
		if len(resp.Kvs) > 0 {
			pred, seen = resp.Kvs[0], resp.Header.Revision
		}
	}
	return nil
}

// waitDeleted returns once key is deleted after revision after.
func (h *Held) waitDeleted(ctx context.Context, lv level, key string, after int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := h.l.cli.Watch(wctx, key, clientv3.WithRev(after+1), clientv3.WithFilterPut())
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ctx.Err())
		case <-h.done:
			if ctx.Err() != nil { // the keep-alive ends with ctx too
				return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ctx.Err())
			}
			return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ErrLeaseLost)
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ctx.Err())
				}
				return fmt.Errorf("lock: %s: watch closed", WaitName(lv.name, lv.mode))
			}
			if wr.CompactRevision != 0 {
				return nil // history gone: the caller looks again
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), err)
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return nil
				}
			}
		}
	}
}

// LockChallenges takes the challenge locks ids in mode m while the global
// writer lock of h is held, then releases the global lock: the query pattern
// of docs/contract.md §6.1 (stop the world, lock every challenge, let the world go).
func (h *Held) LockChallenges(ctx context.Context, m Mode, ids ...string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return ErrReleased
	}
	if len(h.keys) != 1 || h.keys[0].level != "global" {
		return fmt.Errorf("%w: LockChallenges needs a held global writer lock and nothing else", ErrChain)
	}
	g := h.keys[0]
	type pending struct {
		lv   level
		rev  int64
		pred *mvccpb.KeyValue
	}
	var waits []pending
	per := h.l.txnMax / 2
	for start := 0; start < len(ids) || start == 0; start += per {
		batch := ids[start:min(start+per, len(ids))]
		ops := make([]clientv3.Op, 0, 2*len(batch)+1)
		lvs := make([]level, len(batch))
		for i, id := range batch {
			lvs[i] = h.l.challenge(id, m)
			ops = append(ops, clientv3.OpPut(lvs[i].key(h.lease), "", clientv3.WithLease(h.lease)), predecessorOp(lvs[i]))
		}
		last := start+per >= len(ids)
		if last {
			ops = append(ops, clientv3.OpDelete(g.key))
		}
		resp, err := h.l.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("lock: enqueue at challenges: %w", err)
		}
		rev := resp.Header.Revision
		for i, lv := range lvs {
			h.keys = append(h.keys, heldKey{lv.name, lv.key(h.lease), rev})
			waits = append(waits, pending{lv, rev, predecessor(resp.Responses[2*i+1].GetResponseRange(), rev)})
		}
		if last {
			h.keys = h.keys[1:]
			break
		}
	}
	for _, w := range waits {
		if err := h.wait(ctx, w.lv, w.rev, w.pred); err != nil {
			return err
		}
	}
	return nil
}

// Lease is the lease every key of h is bound to. Records that must vanish
// with the holder (reservations, pending markers) use it too.
func (h *Held) Lease() clientv3.LeaseID { return h.lease }

// Done is closed when the lease can no longer be kept alive (lost, expired,
// released, or the ctx of Acquire ended): the locks are then gone or will be
// within the TTL, and the work they protect must stop writing.
func (h *Held) Done() <-chan struct{} { return h.done }

// Fence returns compares asserting that every key of h still exists. Store
// writes include them, so a holder that lost its lease (frozen process)
// cannot commit stale data.
func (h *Held) Fence() []clientv3.Cmp {
	h.mu.Lock()
	defer h.mu.Unlock()
	cmps := make([]clientv3.Cmp, 0, len(h.keys))
	for _, k := range h.keys {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(k.key), "=", k.rev))
	}
	return cmps
}

// ReleaseChallenge drops the challenge level(s) early and keeps the instance
// level (docs/contract.md §6.2: DeleteInstance, the update and deletion events).
func (h *Held) ReleaseChallenge(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return ErrReleased
	}
	var ops []clientv3.Op
	kept := h.keys[:0:0]
	for _, k := range h.keys {
		if k.level == "challenge" {
			ops = append(ops, clientv3.OpDelete(k.key))
		} else {
			kept = append(kept, k)
		}
	}
	if len(ops) == 0 {
		return nil
	}
	if _, err := h.l.cli.Txn(context.WithoutCancel(ctx)).Then(ops...).Commit(); err != nil {
		return fmt.Errorf("lock: release challenge: %w", err)
	}
	h.keys = kept
	return nil
}

// Release frees everything h holds in one round trip (lease revocation). It
// runs even when ctx is cancelled: a client hanging up must not leave locks
// behind for a whole TTL. Calling it again is a no-op.
func (h *Held) Release(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return nil
	}
	h.released = true
	h.stopKA()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Duration(h.l.ttl)*time.Second)
	defer cancel()
	if _, err := h.l.cli.Revoke(rctx, h.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// Keep-alive is stopped: the lease expires within the TTL.
		return fmt.Errorf("lock: release (locks expire within %ds): %w", h.l.ttl, err)
	}
	return nil
}
