package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func decodeInstance(kv *mvccpb.KeyValue) (*Instance, error) {
	var i Instance
	if err := json.Unmarshal(kv.Value, &i); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	i.Rev = kv.ModRevision
	stored := i
	i.stored = &stored
	return &i, nil
}

// writeOps are the puts of every key an instance record lives in.
func (s *Store) writeOps(i *Instance) ([]clientv3.Op, error) {
	v, err := json.Marshal(i)
	if err != nil {
		return nil, fmt.Errorf("store: encode instance: %w", err)
	}
	ops := []clientv3.Op{clientv3.OpPut(s.instKey(i.ChallengeID, i.Identity), string(v))}
	if i.Pooled() {
		if !i.Draining {
			ops = append(ops, clientv3.OpPut(s.poolKey(i.ChallengeID, i.Identity), string(v)))
		}
	} else {
		ops = append(ops, clientv3.OpPut(s.srcKey(i.ChallengeID, i.SourceID), string(v)))
	}
	return ops, nil
}

// dropOps delete every key of the record as stored (old identity), except
// the keys rewritten by writeOps of next (nil = none):
// deleting a key and putting it again in one transaction is refused by etcd.
func (s *Store) dropOps(old, next *Instance) []clientv3.Op {
	keep := map[string]bool{}
	if next != nil {
		ops, _ := s.writeOps(next)
		for _, op := range ops {
			keep[string(op.KeyBytes())] = true
		}
	}
	var ops []clientv3.Op
	del := func(k string) {
		if !keep[k] {
			ops = append(ops, clientv3.OpDelete(k))
		}
	}
	del(s.instKey(old.ChallengeID, old.Identity))
	if old.Pooled() {
		del(s.poolKey(old.ChallengeID, old.Identity))
	} else {
		del(s.srcKey(old.ChallengeID, old.SourceID))
	}
	return ops
}

func (i *Instance) committed(rev int64) {
	i.Rev = rev
	stored := *i
	stored.stored = nil
	i.stored = &stored
}

// ---- reservations: uniqueness of (challenge, source) and fresh creates --

// Reserve books identity for a stack about to be created on challenge cid,
// bound to lease (the request's lock lease) so that a crash frees it:
//   - for a source (sid != ""), in one transaction that fails with
//     ErrExists when the source already has an instance or a reservation;
//   - for the pool (sid == ""), a pool spin-up: counted as Reserved by
//     PoolCounts.
//
// Either way a pending marker for identity is written (ListPending,
// IsPending). ErrNotFound when the challenge is gone, ErrExists when the
// identity is taken.
func (s *Store) Reserve(ctx context.Context, cid, sid, identity string, lease clientv3.LeaseID, fence ...clientv3.Cmp) error {
	if identity == "" || cid == "" {
		return fmt.Errorf("%w: reserve needs a challenge and an identity", ErrInvalid)
	}
	pend, _ := json.Marshal(pendingValue{SourceID: sid})
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(s.challKey(cid)), ">", 0),
		absent(s.instKey(cid, identity)),
		absent(s.pendingKey(cid, identity)),
	}
	ops := []clientv3.Op{clientv3.OpPut(s.pendingKey(cid, identity), string(pend), clientv3.WithLease(lease))}
	if sid != "" {
		cmps = append(cmps, absent(s.srcKey(cid, sid)), absent(s.resvKey(cid, sid)))
		ops = append(ops, clientv3.OpPut(s.resvKey(cid, sid), identity, clientv3.WithLease(lease)))
	}
	r, err := s.commit(ctx, cmps, fence, ops, clientv3.OpGet(s.challKey(cid), clientv3.WithKeysOnly()))
	if err != nil {
		return err
	}
	if !r.ok {
		if !exists(r.Else[0]) {
			return fmt.Errorf("%w: challenge %q", ErrNotFound, cid)
		}
		return fmt.Errorf("%w: source %q or identity %q on challenge %q", ErrExists, sid, identity, cid)
	}
	return nil
}

// CommitInstance turns the reservation of i (see Reserve) into the instance
// record with its claim (i.SourceID != "") or pool membership
// (i.SourceID == ""), and its indexes, in one transaction;
// ErrNoReservation if the reservation is gone (lease lost). i.Rev is set on
// success.
func (s *Store) CommitInstance(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	if i.ChallengeID == "" || i.Identity == "" {
		return fmt.Errorf("%w: instance needs a challenge and an identity", ErrInvalid)
	}
	ops, err := s.writeOps(i)
	if err != nil {
		return err
	}
	pk := s.pendingKey(i.ChallengeID, i.Identity)
	cmps := []clientv3.Cmp{absent(s.instKey(i.ChallengeID, i.Identity))}
	if i.Pooled() {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(pk), ">", 0))
	} else {
		rk := s.resvKey(i.ChallengeID, i.SourceID)
		cmps = append(cmps, clientv3.Compare(clientv3.Value(rk), "=", i.Identity))
		ops = append(ops, clientv3.OpDelete(rk))
	}
	ops = append(ops, clientv3.OpDelete(pk))
	r, err := s.commit(ctx, cmps, fence, ops)
	if err != nil {
		return err
	}
	if !r.ok {
		return fmt.Errorf("%w: identity %q (source %q) on challenge %q", ErrNoReservation, i.Identity, i.SourceID, i.ChallengeID)
	}
	i.committed(r.rev)
	return nil
}

// Unreserve removes the reservation of sid (if still identity's) and the
// pending marker of identity: the stack was not created, or was destroyed.
func (s *Store) Unreserve(ctx context.Context, cid, sid, identity string) error {
	pk := s.pendingKey(cid, identity)
	var err error
	if sid == "" {
		_, err = s.cli.Delete(ctx, pk)
	} else {
		rk := s.resvKey(cid, sid)
		_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(rk), "=", identity)).
			Then(clientv3.OpDelete(rk), clientv3.OpDelete(pk)).Else(clientv3.OpDelete(pk)).Commit()
	}
	if err != nil {
		return fmt.Errorf("store: unreserve: %w", err)
	}
	return nil
}

type pendingValue struct {
	SourceID string `json:"sourceId,omitempty"` // "" = pool spin-up
}

// Pending is a stack being created right now.
type Pending struct {
	ChallengeID, Identity string
	SourceID              string // "" for a pool spin-up
}

// ListPending lists the stacks being created right now on challenge cid, or
// on every challenge when cid is "": a repair job tells them from leaked
// stacks (a stack with neither a record nor a pending marker).
func (s *Store) ListPending(ctx context.Context, cid string) ([]Pending, error) {
	dir := s.p + "pending/"
	if cid != "" {
		dir = s.pendingDir(cid)
	}
	kvs, _, err := s.rangeAll(ctx, dir)
	if err != nil {
		return nil, err
	}
	out := make([]Pending, 0, len(kvs))
	for _, kv := range kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), s.p+"pending/"), "/")
		if len(parts) != 2 {
			continue
		}
		var v pendingValue
		_ = json.Unmarshal(kv.Value, &v)
		out = append(out, Pending{ChallengeID: unseg(parts[0]), Identity: unseg(parts[1]), SourceID: v.SourceID})
	}
	return out, nil
}

// IsPending reports whether the stack of identity is being created now.
func (s *Store) IsPending(ctx context.Context, cid, identity string) (bool, error) {
	resp, err := s.cli.Get(ctx, s.pendingKey(cid, identity), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("store: pending: %w", err)
	}
	return resp.Count > 0, nil
}

// ---- pool -------------------------------------------------------------

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
	// A claim takes the lowest pooled instance. One that lost a race takes a
	// random one among the lowest claimSpread instead: if every loser aimed at
	// the new lowest, n concurrent claims would take n rounds of n
	// transactions each (50 sources at once: p50 185 ms instead of a few ms).
	lowest := clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(claimSpread))
	resp, err := s.cli.Get(ctx, s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(1))
	if err != nil {
		return nil, fmt.Errorf("store: claim: %w", err)
	}
	kvs := resp.Kvs
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

// ---- instances --------------------------------------------------------

// InstanceBySource reads the instance claimed by sid on cid; ErrNotFound if none.
func (s *Store) InstanceBySource(ctx context.Context, cid, sid string) (*Instance, error) {
	return s.getInstance(ctx, s.srcKey(cid, sid))
}

// InstanceByIdentity reads an instance (claimed or pooled); ErrNotFound if none.
func (s *Store) InstanceByIdentity(ctx context.Context, cid, identity string) (*Instance, error) {
	return s.getInstance(ctx, s.instKey(cid, identity))
}

func (s *Store) getInstance(ctx context.Context, key string) (*Instance, error) {
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("store: get instance: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: instance %s", ErrNotFound, strings.TrimPrefix(key, s.p))
	}
	return decodeInstance(resp.Kvs[0])
}

// InstanceWithChallenge reads the instance claimed by sid on cid and its
// challenge in one transaction; ErrNotFound if either is absent.
func (s *Store) InstanceWithChallenge(ctx context.Context, cid, sid string) (*Challenge, *Instance, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.challKey(cid)), clientv3.OpGet(s.srcKey(cid, sid))).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("store: get instance: %w", err)
	}
	ck, ik := resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs
	if len(ck) == 0 || len(ik) == 0 {
		return nil, nil, fmt.Errorf("%w: instance of %q on %q", ErrNotFound, sid, cid)
	}
	c, err := decodeChallenge(ck[0])
	if err != nil {
		return nil, nil, err
	}
	in, err := decodeInstance(ik[0])
	if err != nil {
		return nil, nil, err
	}
	return c, in, nil
}

// SourceInstances reads the instances claimed by sid on every challenge, with
// their challenges (by id), in one transaction.
func (s *Store) SourceInstances(ctx context.Context, sid string) ([]*Instance, map[string]*Challenge, error) {
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(s.srcDir(sid), clientv3.WithPrefix()),
		clientv3.OpGet(s.challDir(), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, nil, fmt.Errorf("store: instances of a source: %w", err)
	}
	ins, err := decodeInstances(resp.Responses[0].GetResponseRange().Kvs)
	if err != nil {
		return nil, nil, err
	}
	cs := map[string]*Challenge{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		c, err := decodeChallenge(kv)
		if err != nil {
			return nil, nil, err
		}
		cs[c.ID] = c
	}
	return ins, cs, nil
}

// InstancesBySource returns the instances claimed by sid on every challenge,
// in one range read of the by-source index, ordered by challenge (escaped).
func (s *Store) InstancesBySource(ctx context.Context, sid string) ([]*Instance, error) {
	kvs, _, err := s.rangeAll(ctx, s.srcDir(sid))
	if err != nil {
		return nil, err
	}
	return decodeInstances(kvs)
}

func decodeInstances(kvs []*mvccpb.KeyValue) ([]*Instance, error) {
	out := make([]*Instance, 0, len(kvs))
	for _, kv := range kvs {
		i, err := decodeInstance(kv)
		if err != nil {
			return nil, err
		}
		out = append(out, i)
	}
	return out, nil
}

// storedOf is the record i was read as; for a record built by hand, the
// one stored under its identity.
func (s *Store) storedOf(ctx context.Context, i *Instance) (*Instance, error) {
	if i.stored != nil {
		return i.stored, nil
	}
	cur, err := s.InstanceByIdentity(ctx, i.ChallengeID, i.Identity)
	if err != nil {
		return nil, err
	}
	return cur.stored, nil
}

// replaceOps are the compares and operations replacing old (stored at rev)
// by next, claim and indexes included.
func (s *Store) replaceOps(old *Instance, rev int64, next *Instance) ([]clientv3.Cmp, []clientv3.Op, error) {
	if old.ChallengeID != next.ChallengeID || old.SourceID != next.SourceID {
		return nil, nil, fmt.Errorf("%w: an instance cannot move to another challenge or source", ErrInvalid)
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.instKey(old.ChallengeID, old.Identity)), "=", rev)}
	puts, err := s.writeOps(next)
	if err != nil {
		return nil, nil, err
	}
	ops := append(s.dropOps(old, next), puts...)
	if old.Identity != next.Identity {
		cmps = append(cmps, absent(s.instKey(next.ChallengeID, next.Identity)))
		ops = append(ops, clientv3.OpDelete(s.pendingKey(next.ChallengeID, next.Identity)))
	}
	return cmps, ops, nil
}

// PutInstance replaces an instance read at i.Rev (ErrConflict if it changed
// since, ErrNotFound if gone), keeping its claim and indexes in step. i.Rev
// is updated on success.
func (s *Store) PutInstance(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	return s.ReplaceInstance(ctx, i, i, fence...)
}

// ReplaceInstance replaces old (read at old.Rev) by next in one
// transaction; next may have another identity (blue-green: the new identity
// must be free, its pending marker is cleared), not another challenge or
// source. ErrConflict if old changed since, ErrNotFound if gone. next.Rev is
// set on success.
func (s *Store) ReplaceInstance(ctx context.Context, old, next *Instance, fence ...clientv3.Cmp) error {
	stored, err := s.storedOf(ctx, old)
	if err != nil {
		return err
	}
	cmps, ops, err := s.replaceOps(stored, old.Rev, next)
	if err != nil {
		return err
	}
	oldKey := s.instKey(stored.ChallengeID, stored.Identity)
	r, err := s.commit(ctx, cmps, fence, ops, clientv3.OpGet(oldKey, clientv3.WithKeysOnly()))
	if err != nil {
		return err
	}
	if !r.ok {
		if !exists(r.Else[0]) {
			return fmt.Errorf("%w: instance %q", ErrNotFound, stored.Identity)
		}
		return fmt.Errorf("%w: instance %q", ErrConflict, stored.Identity)
	}
	next.committed(r.rev)
	return nil
}

// ErrUnchanged, returned by the change function of ModifyInstance, leaves
// the record as it is.
var ErrUnchanged = errors.New("store: unchanged")

// maxModifyAttempts bounds the re-reads of ModifyInstance and RemoveInstance:
// each is caused by a concurrent write of the same record, and every writer of
// an instance record but a renewal holds its instance lock.
const maxModifyAttempts = 16

// ModifyInstance applies change to the current record of identity on
// challenge cid and writes the result, in one transaction comparing the
// revision it read; when another write came in between, it reads again and
// applies change again. So change must set only what its caller owns (the
// outputs of a deployment, a failure, a renewal), never write back a whole
// record read earlier: what an engine operation commits after minutes must
// not undo a renewal made meanwhile. change may move the record to another
// identity (a blue-green update; the new identity must be free). It may
// return ErrUnchanged (nothing written, the current record returned) or any
// other error (returned as is). ErrNotFound when the record is gone.
func (s *Store) ModifyInstance(ctx context.Context, cid, identity string, change func(*Instance) error, fence ...clientv3.Cmp) (*Instance, error) {
	for range maxModifyAttempts {
		cur, err := s.InstanceByIdentity(ctx, cid, identity)
		if err != nil {
			return nil, err
		}
		next := *cur
		next.stored = nil
		if err := change(&next); errors.Is(err, ErrUnchanged) {
			return cur, nil
		} else if err != nil {
			return nil, err
		}
		err = s.ReplaceInstance(ctx, cur, &next, fence...)
		if !errors.Is(err, ErrConflict) {
			if err != nil {
				return nil, err
			}
			return &next, nil
		}
	}
	return nil, fmt.Errorf("%w: instance %q changed %d times while being written", ErrConflict, identity, maxModifyAttempts)
}

// RemoveInstance removes the current record of identity on challenge cid with
// its claim and indexes, whatever was written to it since the caller read it:
// once a stack is destroyed its record must go. Gone already is success.
func (s *Store) RemoveInstance(ctx context.Context, cid, identity string, fence ...clientv3.Cmp) error {
	for range maxModifyAttempts {
		cur, err := s.InstanceByIdentity(ctx, cid, identity)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		err = s.DeleteInstance(ctx, cur, fence...)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if !errors.Is(err, ErrConflict) {
			return err
		}
	}
	return fmt.Errorf("%w: instance %q changed %d times while being removed", ErrConflict, identity, maxModifyAttempts)
}

// Withdraw takes a pooled instance read at i.Rev out of the pool before it
// is destroyed, in one transaction: from then on no claim can take it (a
// claim commits only while the pool key it read is unchanged). ErrConflict
// if the instance changed since (a player claimed it), ErrNotFound if gone.
// i.Draining and i.Rev are updated on success.
func (s *Store) Withdraw(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	if !i.Pooled() {
		return fmt.Errorf("%w: instance %q is claimed", ErrConflict, i.Identity)
	}
	next := *i
	next.Draining = true
	if err := s.ReplaceInstance(ctx, i, &next, fence...); err != nil {
		return err
	}
	*i = next
	return nil
}

// DeleteInstance removes an instance read at i.Rev with its claim and
// indexes, in one transaction; ErrConflict if it changed since, ErrNotFound
// if gone.
func (s *Store) DeleteInstance(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	old, err := s.storedOf(ctx, i)
	if err != nil {
		return err
	}
	key := s.instKey(old.ChallengeID, old.Identity)
	ops := append(s.dropOps(old, nil), clientv3.OpDelete(s.pendingKey(old.ChallengeID, old.Identity)))
	r, err := s.commit(ctx, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", i.Rev)}, fence,
		ops, clientv3.OpGet(key, clientv3.WithKeysOnly()))
	if err != nil {
		return err
	}
	if !r.ok {
		if !exists(r.Else[0]) {
			return fmt.Errorf("%w: instance %q", ErrNotFound, old.Identity)
		}
		return fmt.Errorf("%w: instance %q", ErrConflict, old.Identity)
	}
	return nil
}

// ---- snapshots and counts ----------------------------------------------

// Snapshot is a challenge with its instances, read at one revision.
type Snapshot struct {
	Challenge *Challenge
	Claimed   []*Instance // ordered by source id
	Pooled    []*Instance // ordered by identity (claim order)
	Revision  int64
}

// GetSnapshot reads challenge cid and its instances in one transaction
// (one revision); ErrNotFound if the challenge is absent.
func (s *Store) GetSnapshot(ctx context.Context, cid string) (*Snapshot, error) {
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(s.challKey(cid)), clientv3.OpGet(s.instDir(cid), clientv3.WithPrefix())).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: snapshot: %w", err)
	}
	ck := resp.Responses[0].GetResponseRange().Kvs
	if len(ck) == 0 {
		return nil, fmt.Errorf("%w: challenge %q", ErrNotFound, cid)
	}
	c, err := decodeChallenge(ck[0])
	if err != nil {
		return nil, err
	}
	insts, err := decodeInstances(resp.Responses[1].GetResponseRange().Kvs)
	if err != nil {
		return nil, err
	}
	snap := &Snapshot{Challenge: c, Revision: resp.Header.Revision}
	snap.add(insts)
	return snap, nil
}

func (snap *Snapshot) add(insts []*Instance) {
	for _, i := range insts {
		if i.Pooled() {
			snap.Pooled = append(snap.Pooled, i)
		} else {
			snap.Claimed = append(snap.Claimed, i)
		}
	}
	sort.Slice(snap.Claimed, func(a, b int) bool { return snap.Claimed[a].SourceID < snap.Claimed[b].SourceID })
}

// ChallengeWithInstances reads challenge cid and its claimed instances at
// one revision (RetrieveChallenge); ErrNotFound if the challenge is absent.
func (s *Store) ChallengeWithInstances(ctx context.Context, cid string) (*Challenge, []*Instance, error) {
	snap, err := s.GetSnapshot(ctx, cid)
	if err != nil {
		return nil, nil, err
	}
	return snap.Challenge, snap.Claimed, nil
}

// Instances reads the claimed and pooled instances of challenge cid at one
// revision (no error when the challenge is absent: both are then empty).
func (s *Store) Instances(ctx context.Context, cid string) (claimed, pooled []*Instance, err error) {
	kvs, _, err := s.rangeAll(ctx, s.instDir(cid))
	if err != nil {
		return nil, nil, err
	}
	insts, err := decodeInstances(kvs)
	if err != nil {
		return nil, nil, err
	}
	var snap Snapshot
	snap.add(insts)
	return snap.Claimed, snap.Pooled, nil
}

// AllChallenges reads every challenge with its instances at one revision
// (QueryChallenge, QueryInstance, the janitor: a consistent view without a
// stop-the-world lock), ordered by escaped challenge id.
func (s *Store) AllChallenges(ctx context.Context) ([]*Snapshot, error) {
	// The first page of both ranges in one transaction fixes the revision;
	// further pages (large deployments) are read at that revision.
	first := func(dir string) clientv3.Op {
		return clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithLimit(s.page))
	}
	resp, err := s.cli.Txn(ctx).Then(first(s.challDir()), first(s.p+"inst/")).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: snapshot all: %w", err)
	}
	rev := resp.Header.Revision
	rest := func(r int) ([]*mvccpb.KeyValue, error) {
		rr := resp.Responses[r].GetResponseRange()
		kvs := rr.Kvs
		if !rr.More || len(kvs) == 0 {
			return kvs, nil
		}
		dir := []string{s.challDir(), s.p + "inst/"}[r]
		more, _, err := s.rangeFrom(ctx, rev, string(kvs[len(kvs)-1].Key)+"\x00", clientv3.GetPrefixRangeEnd(dir))
		return append(kvs, more...), err
	}
	ckvs, err := rest(0)
	if err != nil {
		return nil, err
	}
	ikvs, err := rest(1)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*Snapshot, len(ckvs))
	out := make([]*Snapshot, 0, len(ckvs))
	for _, kv := range ckvs {
		c, err := decodeChallenge(kv)
		if err != nil {
			return nil, err
		}
		snap := &Snapshot{Challenge: c, Revision: rev}
		byID[c.ID] = snap
		out = append(out, snap)
	}
	insts, err := decodeInstances(ikvs)
	if err != nil {
		return nil, err
	}
	group := map[string][]*Instance{}
	for _, i := range insts {
		group[i.ChallengeID] = append(group[i.ChallengeID], i)
	}
	for id, is := range group {
		if snap := byID[id]; snap != nil {
			snap.add(is)
		}
	}
	return out, nil
}

// Counts are record counts read at one revision.
type Counts struct {
	Challenges int64
	Instances  int64 // claimed + pooled
	Claimed    int64
	Pooled     int64
}

// Count reads the counts of every record kind with count-only ranges in one
// transaction (the challenges and instances gauges).
func (s *Store) Count(ctx context.Context) (Counts, error) {
	resp, err := s.cli.Txn(ctx).Then(countOp(s.challDir()), countOp(s.p+"inst/"), countOp(s.p+"pool/")).Commit()
	if err != nil {
		return Counts{}, fmt.Errorf("store: count: %w", err)
	}
	n := func(i int) int64 { return resp.Responses[i].GetResponseRange().Count }
	return Counts{Challenges: n(0), Instances: n(1), Pooled: n(2), Claimed: n(1) - n(2)}, nil
}

// ChallengeCounts are the instance counts of one challenge at one revision.
type ChallengeCounts struct {
	Claimed  int64
	Pooled   int64
	Reserved int64 // pool spin-ups in flight (Reserve with no source)
	Total    int64 // Claimed + Pooled
}

// PoolCounts counts the instances of challenge cid (pool decisions) in one
// transaction.
func (s *Store) PoolCounts(ctx context.Context, cid string) (ChallengeCounts, error) {
	resp, err := s.cli.Txn(ctx).Then(countOp(s.instDir(cid)), countOp(s.poolDir(cid)),
		clientv3.OpGet(s.pendingDir(cid), clientv3.WithPrefix())).Commit()
	if err != nil {
		return ChallengeCounts{}, fmt.Errorf("store: pool counts: %w", err)
	}
	n := ChallengeCounts{Total: resp.Responses[0].GetResponseRange().Count, Pooled: resp.Responses[1].GetResponseRange().Count}
	n.Claimed = n.Total - n.Pooled
	for _, kv := range resp.Responses[2].GetResponseRange().Kvs {
		var v pendingValue
		if json.Unmarshal(kv.Value, &v) == nil && v.SourceID == "" {
			n.Reserved++
		}
	}
	return n, nil
}
