package store

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// The two writes every player makes, each in one transaction after one read:
// they are fenced by compares (the records unchanged since read, and the
// caller's fence, lock.Quiet's "nobody at work" on the hot path), never by
// a lock taken for them. A failed compare is ErrFenced: the caller takes
// its locks and does the same the slow way.

// unchanged asserts c's record is the one read.
func (s *Store) unchanged(c *Challenge) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(s.challKey(c.ID)), "=", c.Rev)
}

// RenewInstance sets in's LastRenew to at, in one transaction that also
// asserts in and its challenge c are the records read (by
// InstanceWithChallenge). ErrFenced when either changed or the fence failed.
func (s *Store) RenewInstance(ctx context.Context, c *Challenge, in *Instance, at time.Time, fence ...clientv3.Cmp) (*Instance, error) {
	if in.stored == nil {
		return nil, fmt.Errorf("%w: renew needs the record as read", ErrInvalid)
	}
	next := *in
	next.stored, next.LastRenew = nil, at
	cmps, ops, err := s.replaceOps(in.stored, in.Rev, &next)
	if err != nil {
		return nil, err
	}
	r, err := s.commit(ctx, nil, append(append(cmps, s.unchanged(c)), fence...), ops)
	if err != nil {
		return nil, err
	}
	if !r.ok { // not reached: commit reports a failed fence as ErrFenced
		return nil, ErrFenced
	}
	next.committed(r.rev)
	return &next, nil
}

// ClaimWithChallenge reads challenge cid and its lowest pooled instance in
// one transaction, calls check on the challenge (its error is returned as
// is: nothing written), then claims that instance for sid as ClaimPooled
// does, asserting the challenge is still the one checked. ErrNotFound when
// the challenge is absent, ErrPoolEmpty when nothing is pooled, ErrExists
// when the source has an instance or a reservation, ErrFenced when the
// challenge changed or the fence failed.
func (s *Store) ClaimWithChallenge(ctx context.Context, cid, sid string, check func(*Challenge) error, set func(*Instance), fence ...clientv3.Cmp) (*Challenge, *Claim, error) {
	if sid == "" {
		return nil, nil, fmt.Errorf("%w: claim needs a source", ErrInvalid)
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.challKey(cid)),
		clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(1)),
	).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("store: claim: %w", err)
	}
	ck := resp.Responses[0].GetResponseRange().Kvs
	if len(ck) == 0 {
		return nil, nil, fmt.Errorf("%w: challenge %q", ErrNotFound, cid)
	}
	c, err := decodeChallenge(ck[0])
	if err != nil {
		return nil, nil, err
	}
	if err := check(c); err != nil {
		return c, nil, err
	}
	claim, err := s.claim(ctx, cid, sid, resp.Responses[1].GetResponseRange().Kvs, set, append([]clientv3.Cmp{s.unchanged(c)}, fence...))
	return c, claim, err
}
