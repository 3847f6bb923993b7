package store

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The two writes every player makes, each in one transaction: they are
// fenced by compares (the records unchanged since read, and the caller's
// fence, lock.Quiet's "nobody at work" on the hot path), never by a lock
// taken for them. The caller may skip the read before them by giving the
// records it saw last (a renewal's, a claim's PoolHint): the transaction
// asserts them, and when they are stale it reads the current ones in its
// Else branch, so a stale guess costs the round trip the read would have.
// A failed fence is ErrFenced: the caller takes its locks and does the same
// the slow way.

// Stale is a renewal refused because the records given are not the current
// ones (it wraps ErrFenced). Challenge and Instance are the current records,
// read in the same transaction; nil when gone.
type Stale struct {
	Challenge *Challenge
	Instance  *Instance
}

func (e *Stale) Error() string { return "store: the records changed since they were read" }

func (e *Stale) Unwrap() error { return ErrFenced }

// PoolHint is what a claim saw of a challenge and its pool after it
// (Claim.Next): the next claim on that challenge may start from it instead
// of reading them. Opaque; a stale hint costs one round trip, never a wrong
// claim.
type PoolHint struct {
	challenge *Challenge
	pooled    []*mvccpb.KeyValue
}

// unchanged asserts c's record is the one read.
func (s *Store) unchanged(c *Challenge) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(s.challKey(c.ID)), "=", c.Rev)
}

// RenewInstance sets in's LastRenew to at, in one transaction that also
// asserts in and its challenge c are the current records (as read by
// InstanceWithChallenge or returned by an earlier renewal). *Stale when
// either changed; ErrFenced when the fence failed.
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
	r, err := s.commit(ctx, append(cmps, s.unchanged(c)), fence, ops,
		clientv3.OpGet(s.challKey(c.ID)), clientv3.OpGet(s.srcKey(in.ChallengeID, in.SourceID)))
	if err != nil {
		return nil, err
	}
	if !r.ok {
		return nil, stale(r.Else[0], r.Else[1])
	}
	next.committed(r.rev)
	return &next, nil
}

// stale is the *Stale error of the current records read by the responses.
func stale(chall, inst *etcdserverpb.ResponseOp) error {
	var st Stale
	var err error
	if kv := chall.GetResponseRange().Kvs; len(kv) > 0 {
		if st.Challenge, err = decodeChallenge(kv[0]); err != nil {
			return err
		}
	}
	if kv := inst.GetResponseRange().Kvs; len(kv) > 0 {
		if st.Instance, err = decodeInstance(kv[0]); err != nil {
			return err
		}
	}
	return &st
}

// ClaimWithChallenge claims the pooled instance of challenge cid for sid as
// ClaimPooled does, after check accepted the challenge (check's error is
// returned as is: nothing written), in a transaction that asserts the
// challenge is still the one checked. With a hint (from an earlier claim on
// cid) it starts from the hint's challenge and pool: one round trip when
// they are current. Without one, or when check refuses the hint's
// challenge, it reads them first. ErrNotFound when the challenge is absent,
// ErrPoolEmpty when nothing is pooled, ErrExists when the source has an
// instance or a reservation, ErrFenced when the fence failed.
func (s *Store) ClaimWithChallenge(ctx context.Context, cid, sid string, hint *PoolHint, check func(*Challenge) error, set func(*Instance), fence ...clientv3.Cmp) (*Challenge, *Claim, error) {
	if sid == "" {
		return nil, nil, fmt.Errorf("%w: claim needs a source", ErrInvalid)
	}
	job := claimJob{cid: cid, sid: sid, set: set, fence: fence, check: check}
	limit := s.claims.begin(cid)
	defer s.claims.end(cid)
	// A hint is used only when it is accepted: a refusal must be judged on
	// the current challenge.
	if hint != nil && hint.challenge.ID == cid && len(hint.pooled) > 0 && check(hint.challenge) == nil {
		job.c = hint.challenge
		return s.claim(ctx, job, hint.pooled)
	}
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.challKey(cid)),
		clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(limit)),
	).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("store: claim: %w", err)
	}
	ck := resp.Responses[0].GetResponseRange().Kvs
	if len(ck) == 0 {
		return nil, nil, fmt.Errorf("%w: challenge %q", ErrNotFound, cid)
	}
	if job.c, err = decodeChallenge(ck[0]); err != nil {
		return nil, nil, err
	}
	if err := check(job.c); err != nil {
		return job.c, nil, err
	}
	return s.claim(ctx, job, resp.Responses[1].GetResponseRange().Kvs)
}
