package lock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Defaults.
const (
	DefaultPrefix = "/challfn"
	DefaultTTL    = 10 * time.Second
)

// Span names given to the Hook.
const (
	SpanAcquire = "lock.acquire"
	// Waits are named "lock.wait.<challenge|instance>.<read|write>", see
	// WaitName.
)

// WaitName is the name of a wait at a level ("challenge", "instance") in a
// mode.
func WaitName(level string, m Mode) string { return "lock.wait." + level + "." + m.String() }

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
	cli  *clientv3.Client
	dir  string // <prefix>/lock/
	ttl  int64
	hook Hook
}

// New returns a Locker using cli.
func New(cli *clientv3.Client, o Options) *Locker {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.TTL <= 0 {
		o.TTL = DefaultTTL
	}
	return &Locker{
		cli:  cli,
		dir:  strings.TrimSuffix(o.Prefix, "/") + "/lock/",
		ttl:  int64((o.TTL + time.Second - 1) / time.Second),
		hook: o.Hook,
	}
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
	done   chan struct{} // closed when the keep-alive ends

	mu       sync.Mutex
	keys     []heldKey
	released bool
}

type heldKey struct {
	level string
	key   string
	rev   int64
}

// grant starts the acquisition's session: a lease kept alive while ctx lives.
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

// Lease is the lease every key of h is bound to. Records that must vanish
// with the holder (reservations, pending markers) use it too.
func (h *Held) Lease() clientv3.LeaseID { return h.lease }

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

// ReleaseChallenge drops the challenge level early and keeps the instance
// level (docs/contract.md §6.2: DeleteInstance and the instance work, once
// they know what they hold).
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
