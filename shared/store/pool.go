package store

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim is the result of ClaimPooled.
type Claim struct {
	Instance *Instance
	// PooledBefore and Total (claimed + pooled) are counted in the claiming
	// transaction, for the refill decision (docs/contract.md §4.6).
	PooledBefore, Total int64
	// Next is what the claim saw of the pool after it, for the next claim
	// on the challenge (ClaimWithChallenge); nil from ClaimPooled.
	Next *PoolHint
}

// ClaimPooled gives source sid the pooled instance of challenge cid with
// the lowest identity, in one transaction that checks the instance is still
// unclaimed and the source has neither an instance nor a reservation.
// set fills what the claim changes (LastRenew, Until, Additional...);
// SourceID, Identity and Since are kept. ErrPoolEmpty (also ErrNotFound)
// when nothing is pooled, ErrExists when the source already has an instance.
func (s *Store) ClaimPooled(ctx context.Context, cid, sid string, set func(*Instance), fence ...clientv3.Cmp) (*Claim, error) {
	if sid == "" {
		return nil, fmt.Errorf("%w: claim needs a source", ErrInvalid)
	}
	limit := s.claims.begin(cid)
	defer s.claims.end(cid)
	resp, err := s.cli.Get(ctx, s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("store: claim: %w", err)
	}
	_, claim, err := s.claim(ctx, claimJob{cid: cid, sid: sid, set: set, fence: fence}, resp.Kvs)
	return claim, err
}

// claimJob is what the claim loop of ClaimPooled and ClaimWithChallenge
// needs.
type claimJob struct {
	cid, sid string
	set      func(*Instance)
	fence    []clientv3.Cmp
	// c, when set, is the challenge the claim asserts unchanged; an attempt
	// that finds it changed checks the current one and goes on with it.
	c     *Challenge
	check func(*Challenge) error
}

// claim claims one of kvs (pooled records of j.cid) for j.sid, and returns
// the challenge it asserted (j.c, or the current one if it changed).
func (s *Store) claim(ctx context.Context, j claimJob, kvs []*mvccpb.KeyValue) (*Challenge, *Claim, error) {
	// A claim takes the lowest pooled instance that no other claim of this
	// process aims at (claiming.go). One that lost a race takes a random
	// one among the lowest claimSpread instead: if every loser aimed at the
	// new lowest, n concurrent claims would take n rounds of n transactions
	// each (50 sources at once: p50 185 ms instead of a few ms).
	cid, sid, c := j.cid, j.sid, j.c
	lowest := clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(claimSpread))
	reads := []clientv3.Op{lowest, clientv3.OpGet(s.srcKey(cid, sid), clientv3.WithKeysOnly()), clientv3.OpGet(s.resvKey(cid, sid), clientv3.WithKeysOnly())}
	if c != nil {
		reads = append(reads, clientv3.OpGet(s.challKey(cid)))
	}
	for retry := false; ; retry = true {
		if err := ctx.Err(); err != nil {
			return c, nil, fmt.Errorf("store: claim: %w", err)
		}
		if len(kvs) == 0 {
			return c, nil, fmt.Errorf("%w: challenge %q", ErrPoolEmpty, cid)
		}
		kv, release := s.claims.aim(kvs, retry)
		r, claim, err := s.claimOnce(ctx, j, c, kv, reads)
		release()
		if err != nil || claim != nil {
			return c, claim, err
		}
		if exists(r.Else[1]) || exists(r.Else[2]) {
			return c, nil, fmt.Errorf("%w: source %q on challenge %q", ErrExists, sid, cid)
		}
		if c != nil {
			ck := r.Else[3].GetResponseRange().Kvs
			if len(ck) == 0 {
				return nil, nil, fmt.Errorf("%w: challenge %q", ErrNotFound, cid)
			}
			if ck[0].ModRevision != c.Rev {
				if c, err = decodeChallenge(ck[0]); err != nil {
					return nil, nil, err
				}
				if err := j.check(c); err != nil {
					return c, nil, err
				}
			}
		}
		kvs = r.Else[0].GetResponseRange().Kvs // someone else took it: try the next one
	}
}

// claimOnce attempts to claim the pooled record kv for j.sid, asserting c
// unchanged (when set); a nil claim and no error is a failed compare, whose
// reads are in the result's Else.
func (s *Store) claimOnce(ctx context.Context, j claimJob, c *Challenge, kv *mvccpb.KeyValue, reads []clientv3.Op) (txnResult, *Claim, error) {
	cid, sid := j.cid, j.sid
	pooled, err := decodeInstance(kv)
	if err != nil {
		return txnResult{}, nil, err
	}
	next := *pooled
	next.stored = nil
	if j.set != nil {
		j.set(&next)
	}
	next.ChallengeID, next.Identity, next.SourceID, next.Since = cid, pooled.Identity, sid, pooled.Since
	ops, err := s.writeOps(&next)
	if err != nil {
		return txnResult{}, nil, err
	}
	// Reads after the writes of a transaction see them: counts after,
	// and (for the next claim's hint) the pool as it will find it.
	ops = append(ops, clientv3.OpDelete(s.poolKey(cid, pooled.Identity)))
	counted := len(ops)
	ops = append(ops, countOp(s.poolDir(cid)), countOp(s.instDir(cid)))
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(s.poolKey(cid, pooled.Identity)), "=", pooled.Rev),
		absent(s.srcKey(cid, sid)),
		absent(s.resvKey(cid, sid)),
	}
	if c != nil {
		cmps = append(cmps, s.unchanged(c))
		ops = append(ops, clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(hintSize)))
	}
	r, err := s.commit(ctx, cmps, j.fence, ops, reads...)
	if err != nil || !r.ok {
		return r, nil, err
	}
	next.committed(r.rev)
	claim := &Claim{Instance: &next,
		PooledBefore: r.Then[counted].GetResponseRange().Count + 1,
		Total:        r.Then[counted+1].GetResponseRange().Count}
	if c != nil {
		claim.Next = &PoolHint{challenge: c, pooled: r.Then[counted+2].GetResponseRange().Kvs}
	}
	return r, claim, nil
}

// claimSpread bounds how many of the lowest pooled instances a claim that
// lost a race chooses from.
const claimSpread = 64

// hintSize is how many pooled instances a claim reads for the next one:
// enough that a stale hint rarely sends the next claim to a taken record,
// few enough to keep the claim's answer small.
const hintSize = 16
