package lock

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Quiet is a chain held for the length of one write: its fence asserts, inside
// the write's own transaction, that nobody holds or waits for a level of the
// chain in a conflicting mode. A write it fences is what a write made under
// Acquire would be had the chain been taken and released at that write's
// revision: no lease, no keys, no round trip of its own, nothing to release.
//
// It serves the hot paths (a renewal, a pool claim) that make one write: a
// fence that fails (store.ErrFenced) means somebody is at work on the
// challenge or the instance, and the caller takes the chain with Acquire,
// waiting its turn as before. A write that needs the chain across several
// steps (a deployment, a destroy) must Acquire it.
type Quiet struct{ cmps []clientv3.Cmp }

// Quiet returns the fence of chain c held for one write.
func (l *Locker) Quiet(c Chain) (*Quiet, error) {
	lvs, err := l.levels(c)
	if err != nil {
		return nil, err
	}
	q := &Quiet{cmps: make([]clientv3.Cmp, 0, len(lvs))}
	for _, lv := range lvs {
		q.cmps = append(q.cmps, lv.free())
	}
	return q, nil
}

// Fence returns the compares every write under q carries.
func (q *Quiet) Fence() []clientv3.Cmp { return q.cmps }

// Release does nothing: q holds no key.
func (q *Quiet) Release(context.Context) error { return nil }

// ReleaseChallenge does nothing: q holds no key.
func (q *Quiet) ReleaseChallenge(context.Context) error { return nil }
