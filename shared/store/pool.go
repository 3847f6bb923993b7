package store

import (
	"context"
	"fmt"
	"math/rand/v2"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Claim is the result of ClaimPooled.
type Claim struct {
	Instance *Instance
	// PooledBefore and Total (claimed + pooled) are counted in the claiming
	// transaction, for the refill decision (docs/contract.md §4.6).
	PooledBefore, Total int64
}

// ClaimPooled gives source sid the pooled instance of challenge cid with
// the lowest identity, in one transaction that checks the instance is still
// unclaimed and the source has neither an instance nor a reservation.
// set fills what the claim changes (LastRenew, Until, Additional...);
// SourceID, Identity and Since are kept. ErrPoolEmpty (also ErrNotFound)
// when nothing is pooled, ErrExists when the source already has an instance.
// Racing claims retry on the next pooled instance.
func (s *Store) ClaimPooled(ctx context.Context, cid, sid string, set func(*Instance), fence ...clientv3.Cmp) (*Claim, error) {
	if sid == "" {
		return nil, fmt.Errorf("%w: claim needs a source", ErrInvalid)
	}
	resp, err := s.cli.Get(ctx, s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(1))
	if err != nil {
		return nil, fmt.Errorf("store: claim: %w", err)
	}
	return s.claim(ctx, cid, sid, resp.Kvs, set, fence)
}

// claim claims one of kvs (pooled records of cid) for sid: the loop of
// ClaimPooled and ClaimWithChallenge.
func (s *Store) claim(ctx context.Context, cid, sid string, kvs []*mvccpb.KeyValue, set func(*Instance), fence []clientv3.Cmp) (*Claim, error) {
	// A claim takes the lowest pooled instance. One that lost a race takes a
	// random one among the lowest claimSpread instead: if every loser aimed at
	// the new lowest, n concurrent claims would take n rounds of n
	// transactions each (50 sources at once: p50 185 ms instead of a few ms).
	lowest := clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(claimSpread))
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("store: claim: %w", err)
		}
		if len(kvs) == 0 {
			return nil, fmt.Errorf("%w: challenge %q", ErrPoolEmpty, cid)
		}
		pooled, err := decodeInstance(kvs[rand.IntN(len(kvs))])
		if err != nil {
			return nil, err
		}
		next := *pooled
		next.stored = nil
		if set != nil {
			set(&next)
		}
		next.ChallengeID, next.Identity, next.SourceID, next.Since = cid, pooled.Identity, sid, pooled.Since
		ops, err := s.writeOps(&next)
		if err != nil {
			return nil, err
		}
		// Reads after the writes of a transaction see them: counts after.
		ops = append(ops, clientv3.OpDelete(s.poolKey(cid, pooled.Identity)), countOp(s.poolDir(cid)), countOp(s.instDir(cid)))
		r, err := s.commit(ctx, []clientv3.Cmp{
			clientv3.Compare(clientv3.ModRevision(s.poolKey(cid, pooled.Identity)), "=", pooled.Rev),
			absent(s.srcKey(cid, sid)),
			absent(s.resvKey(cid, sid)),
		}, fence, ops, lowest, clientv3.OpGet(s.srcKey(cid, sid), clientv3.WithKeysOnly()), clientv3.OpGet(s.resvKey(cid, sid), clientv3.WithKeysOnly()))
		if err != nil {
			return nil, err
		}
		if r.ok {
			next.committed(r.rev)
			n := len(r.Then)
			return &Claim{Instance: &next, PooledBefore: r.Then[n-2].GetResponseRange().Count + 1, Total: r.Then[n-1].GetResponseRange().Count}, nil
		}
		if exists(r.Else[1]) || exists(r.Else[2]) {
			return nil, fmt.Errorf("%w: source %q on challenge %q", ErrExists, sid, cid)
		}
		kvs = r.Else[0].GetResponseRange().Kvs // someone else took it: try the next one
	}
}

// claimSpread bounds how many of the lowest pooled instances a claim that
// lost a race chooses from.
const claimSpread = 64
