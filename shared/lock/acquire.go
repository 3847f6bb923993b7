package lock

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

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
	// branch enqueues at the first level, so the slow path starts one round
	// trip ahead.
	cmps := make([]clientv3.Cmp, 0, len(lvs))
	puts := make([]clientv3.Op, 0, len(lvs))
	for _, lv := range lvs {
		cmps = append(cmps, lv.free())
		puts = append(puts, clientv3.OpPut(lv.key(h.lease), "", clientv3.WithLease(h.lease)))
	}
	first := lvs[0]
	resp, err := l.cli.Txn(ctx).If(cmps...).Then(puts...).
		Else(clientv3.OpPut(first.key(h.lease), "", clientv3.WithLease(h.lease)), predecessorOp(first)).Commit()
	if err != nil {
		return nil, fmt.Errorf("lock: acquire: %w", err)
	}
	rev := resp.Header.Revision
	if resp.Succeeded {
		for _, lv := range lvs {
			h.keys = append(h.keys, heldKey{lv.name, lv.key(h.lease), rev})
		}
		return h, nil
	}

	// Slow path, level by level: a level is enqueued only while the one
	// above is held.
	h.keys = append(h.keys, heldKey{first.name, first.key(h.lease), rev})
	if err := h.wait(ctx, first, rev, predecessor(resp.Responses[1].GetResponseRange(), rev)); err != nil {
		return nil, err
	}
	for _, lv := range lvs[1:] {
		resp, err := l.cli.Txn(ctx).Then(clientv3.OpPut(lv.key(h.lease), "", clientv3.WithLease(h.lease)), predecessorOp(lv)).Commit()
		if err != nil {
			return nil, fmt.Errorf("lock: enqueue at %s: %w", lv.name, err)
		}
		rev := resp.Header.Revision
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
