package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultCallTimeout bounds one etcd request (KV and lease calls) when
// Config.CallTimeout is zero.
const DefaultCallTimeout = 5 * time.Second

// ErrUnavailable wraps the failure of a call that etcd did not answer in
// time (no leader, quorum lost, no member reachable).
var ErrUnavailable = errors.New("etcd: unavailable")

// Without a bound, a request hangs as long as its context allows when the
// cluster has lost its quorum: the client retries reads on every member
// until the context ends, the server holds lease grants and writes for its
// own request timeout, and a function's request context lives up to 600 s.
// bound gives every KV and lease call (not watches, not keep-alives) its own
// deadline and asks for a leader (clientv3.WithRequireLeader), so a
// leaderless member refuses at once instead of queueing the request.
func bound(cli *clientv3.Client, d time.Duration) {
	cli.KV = boundKV{cli.KV, d}
	cli.Lease = boundLease{cli.Lease, d}
}

// call derives the context of one bounded call.
func call(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(clientv3.WithRequireLeader(ctx), d)
}

// classify marks as ErrUnavailable the error of a call whose own deadline
// passed, or that etcd itself gave up on (a member without quorum answers a
// linearizable read with "context deadline exceeded", code Unknown, before
// the call's deadline), the caller's context being still alive.
func classify(parent, ctx context.Context, err error) error {
	if err != nil && parent.Err() == nil && (ctx.Err() != nil || serverTimedOut(err)) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return err
}

func serverTimedOut(err error) bool {
	s, ok := status.FromError(err)
	if !ok {
		return false
	}
	return s.Code() == codes.DeadlineExceeded ||
		s.Code() == codes.Unknown && s.Message() == context.DeadlineExceeded.Error()
}

type boundKV struct {
	clientv3.KV
	d time.Duration
}

func (k boundKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	c, cancel := call(ctx, k.d)
	defer cancel()
	r, err := k.KV.Put(c, key, val, opts...)
	return r, classify(ctx, c, err)
}

func (k boundKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	c, cancel := call(ctx, k.d)
	defer cancel()
	r, err := k.KV.Get(c, key, opts...)
	return r, classify(ctx, c, err)
}

func (k boundKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	c, cancel := call(ctx, k.d)
	defer cancel()
	r, err := k.KV.Delete(c, key, opts...)
	return r, classify(ctx, c, err)
}

func (k boundKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	c, cancel := call(ctx, k.d)
	defer cancel()
	r, err := k.KV.Do(c, op)
	return r, classify(ctx, c, err)
}

func (k boundKV) Txn(ctx context.Context) clientv3.Txn {
	c, cancel := call(ctx, k.d)
	return &boundTxn{Txn: k.KV.Txn(c), parent: ctx, ctx: c, cancel: cancel}
}

// boundTxn's deadline starts at Txn(ctx); If/Then/Else only build it.
type boundTxn struct {
	clientv3.Txn
	parent, ctx context.Context
	cancel      context.CancelFunc
}

func (t *boundTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *boundTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *boundTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *boundTxn) Commit() (*clientv3.TxnResponse, error) {
	defer t.cancel()
	r, err := t.Txn.Commit()
	return r, classify(t.parent, t.ctx, err)
}

type boundLease struct {
	clientv3.Lease
	d time.Duration
}

func (l boundLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	c, cancel := call(ctx, l.d)
	defer cancel()
	r, err := l.Lease.Grant(c, ttl)
	return r, classify(ctx, c, err)
}

func (l boundLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	c, cancel := call(ctx, l.d)
	defer cancel()
	r, err := l.Lease.Revoke(c, id)
	return r, classify(ctx, c, err)
}

func (l boundLease) TimeToLive(ctx context.Context, id clientv3.LeaseID, opts ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	c, cancel := call(ctx, l.d)
	defer cancel()
	r, err := l.Lease.TimeToLive(c, id, opts...)
	return r, classify(ctx, c, err)
}

func (l boundLease) KeepAliveOnce(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseKeepAliveResponse, error) {
	c, cancel := call(ctx, l.d)
	defer cancel()
	r, err := l.Lease.KeepAliveOnce(c, id)
	return r, classify(ctx, c, err)
}
