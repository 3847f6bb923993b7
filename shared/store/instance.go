package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

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
		ops = append(ops, clientv3.OpPut(s.poolKey(i.ChallengeID, i.Identity), string(v)))
	} else {
		ops = append(ops, clientv3.OpPut(s.srcKey(i.ChallengeID, i.SourceID), string(v)))
		if i.Until != nil {
			ops = append(ops, clientv3.OpPut(s.expKey(i.ChallengeID, i.Identity, *i.Until), i.SourceID))
		}
	}
	return ops, nil
}

// dropOps delete every key of the record as stored (old identity, old
// until), except the keys rewritten by writeOps of next (nil = none):
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
		if old.Until != nil {
			del(s.expKey(old.ChallengeID, old.Identity, *old.Until))
		}
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

// Reserve books source sid on challenge cid for a new instance identity
// while its stack is created, in one transaction bound to lease (the
// request's lock lease): ErrExists when the source already has an instance
// or a reservation, ErrNotFound when the challenge is gone. A pending marker
// for identity is written too (see Pending). Lease expiry (crash) removes
// both.
func (s *Store) Reserve(ctx context.Context, cid, sid, identity string, lease clientv3.LeaseID, fence ...clientv3.Cmp) error {
	if sid == "" || identity == "" || cid == "" {
		return fmt.Errorf("%w: reserve needs challenge, source and identity", ErrInvalid)
	}
	pend, _ := json.Marshal(pendingValue{SourceID: sid})
	r, err := s.commit(ctx,
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(s.challKey(cid)), ">", 0),
			absent(s.srcKey(cid, sid)),
			absent(s.resvKey(cid, sid)),
			absent(s.instKey(cid, identity)),
		}, fence,
		[]clientv3.Op{
			clientv3.OpPut(s.resvKey(cid, sid), identity, clientv3.WithLease(lease)),
			clientv3.OpPut(s.pendingKey(cid, identity), string(pend), clientv3.WithLease(lease)),
		},
		clientv3.OpGet(s.challKey(cid), clientv3.WithKeysOnly()))
	if err != nil {
		return err
	}
	if !r.ok {
		if !exists(r.Else[0]) {
			return fmt.Errorf("%w: challenge %q", ErrNotFound, cid)
		}
		return fmt.Errorf("%w: source %q on challenge %q", ErrExists, sid, cid)
	}
	return nil
}

// CommitReserved turns the reservation of (i.ChallengeID, i.SourceID) for
// i.Identity into the instance record, its claim and indexes, in one
// transaction; ErrNoReservation if the reservation is gone (lease lost).
// i.Rev is set on success.
func (s *Store) CommitReserved(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	if i.Pooled() {
		return fmt.Errorf("%w: committing a reservation needs a source", ErrInvalid)
	}
	ops, err := s.writeOps(i)
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpDelete(s.resvKey(i.ChallengeID, i.SourceID)), clientv3.OpDelete(s.pendingKey(i.ChallengeID, i.Identity)))
	r, err := s.commit(ctx, []clientv3.Cmp{
		clientv3.Compare(clientv3.Value(s.resvKey(i.ChallengeID, i.SourceID)), "=", i.Identity),
		absent(s.instKey(i.ChallengeID, i.Identity)),
	}, fence, ops)
	if err != nil {
		return err
	}
	if !r.ok {
		return fmt.Errorf("%w: source %q on challenge %q", ErrNoReservation, i.SourceID, i.ChallengeID)
	}
	i.committed(r.rev)
	return nil
}

// AbortReserved removes the reservation (if still identity's) and the
// pending marker of identity.
func (s *Store) AbortReserved(ctx context.Context, cid, sid, identity string) error {
	rk := s.resvKey(cid, sid)
	pk := s.pendingKey(cid, identity)
	_, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(rk), "=", identity)).
		Then(clientv3.OpDelete(rk), clientv3.OpDelete(pk)).Else(clientv3.OpDelete(pk)).Commit()
	if err != nil {
		return fmt.Errorf("store: abort reservation: %w", err)
	}
	return nil
}

type pendingValue struct {
	SourceID string `json:"sourceId,omitempty"` // "" = pool spin-up or replacement
}

// MarkPending records that the stack of identity is being created right
// now (pool spin-up, blue-green replacement), bound to lease. Committing the
// record clears it.
func (s *Store) MarkPending(ctx context.Context, cid, identity string, lease clientv3.LeaseID, fence ...clientv3.Cmp) error {
	v, _ := json.Marshal(pendingValue{})
	r, err := s.commit(ctx, nil, fence, []clientv3.Op{clientv3.OpPut(s.pendingKey(cid, identity), string(v), clientv3.WithLease(lease))})
	if err != nil {
		return err
	}
	if !r.ok {
		return ErrFenced
	}
	return nil
}

// ClearPending removes the pending marker of identity.
func (s *Store) ClearPending(ctx context.Context, cid, identity string) error {
	if _, err := s.cli.Delete(ctx, s.pendingKey(cid, identity)); err != nil {
		return fmt.Errorf("store: clear pending: %w", err)
	}
	return nil
}

// Pending is a stack being created right now.
type Pending struct {
	ChallengeID, Identity string
	SourceID              string // "" for a pool spin-up or a replacement
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

// PutPooled stores a new pooled instance (SourceID ""), clearing its pending
// marker; ErrExists if the identity is taken.
func (s *Store) PutPooled(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	if !i.Pooled() {
		return fmt.Errorf("%w: a pooled instance has no source", ErrInvalid)
	}
	ops, err := s.writeOps(i)
	if err != nil {
		return err
	}
	ops = append(ops, clientv3.OpDelete(s.pendingKey(i.ChallengeID, i.Identity)))
	r, err := s.commit(ctx, []clientv3.Cmp{absent(s.instKey(i.ChallengeID, i.Identity))}, fence, ops)
	if err != nil {
		return err
	}
	if !r.ok {
		return fmt.Errorf("%w: instance %q", ErrExists, i.Identity)
	}
	i.committed(r.rev)
	return nil
}

// Claim gives source sid the pooled instance of challenge cid with the
// lowest identity, in one transaction that checks the instance is still
// unclaimed and the source has neither an instance nor a reservation.
// set fills what the claim changes (LastRenew, Until, Additional...);
// SourceID, Identity and Since are kept. ErrPoolEmpty when nothing is
// pooled, ErrExists when the source already has an instance. Racing claims
// retry on the next pooled instance.
func (s *Store) Claim(ctx context.Context, cid, sid string, set func(*Instance), fence ...clientv3.Cmp) (*Instance, error) {
	if sid == "" {
		return nil, fmt.Errorf("%w: claim needs a source", ErrInvalid)
	}
	lowest := clientv3.OpGet(s.poolDir(cid), clientv3.WithPrefix(), clientv3.WithLimit(1))
	resp, err := s.cli.Txn(ctx).Then(lowest).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: claim: %w", err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("store: claim: %w", err)
		}
		if len(kvs) == 0 {
			return nil, fmt.Errorf("%w: challenge %q", ErrPoolEmpty, cid)
		}
		pooled, err := decodeInstance(kvs[0])
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
		ops = append(ops, clientv3.OpDelete(s.poolKey(cid, pooled.Identity)))
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
			return &next, nil
		}
		if exists(r.Else[1]) || exists(r.Else[2]) {
			return nil, fmt.Errorf("%w: source %q on challenge %q", ErrExists, sid, cid)
		}
		kvs = r.Else[0].GetResponseRange().Kvs // someone else took it: try the next one
	}
}

// ---- instances --------------------------------------------------------

// GetBySource reads the instance claimed by sid on cid; ErrNotFound if none.
func (s *Store) GetBySource(ctx context.Context, cid, sid string) (*Instance, error) {
	return s.getInstance(ctx, s.srcKey(cid, sid))
}

// GetByIdentity reads an instance (claimed or pooled); ErrNotFound if none.
func (s *Store) GetByIdentity(ctx context.Context, cid, identity string) (*Instance, error) {
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

// ListBySource returns the instances claimed by sid on every challenge, in
// one range read of the by-source index, ordered by challenge (escaped).
func (s *Store) ListBySource(ctx context.Context, sid string) ([]*Instance, error) {
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

// UpdateInstance replaces an instance read at i.Rev (ErrConflict if it
// changed since, ErrNotFound if gone), keeping its claim and indexes in
// step. The identity may change (blue-green: the new identity must be free;
// its pending marker is cleared); the source may not.
func (s *Store) UpdateInstance(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	old := i.stored
	if old == nil { // built by hand: find what is stored
		cur, err := s.GetByIdentity(ctx, i.ChallengeID, i.Identity)
		if err != nil {
			return err
		}
		old = cur.stored
	}
	if old.ChallengeID != i.ChallengeID || old.SourceID != i.SourceID {
		return fmt.Errorf("%w: an update cannot move an instance to another challenge or source", ErrInvalid)
	}
	oldKey := s.instKey(old.ChallengeID, old.Identity)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(oldKey), "=", i.Rev)}
	if old.Identity != i.Identity {
		cmps = append(cmps, absent(s.instKey(i.ChallengeID, i.Identity)))
	}
	puts, err := s.writeOps(i)
	if err != nil {
		return err
	}
	ops := append(s.dropOps(old, i), puts...)
	if old.Identity != i.Identity {
		ops = append(ops, clientv3.OpDelete(s.pendingKey(i.ChallengeID, i.Identity)))
	}
	r, err := s.commit(ctx, cmps, fence, ops, clientv3.OpGet(oldKey, clientv3.WithKeysOnly()))
	if err != nil {
		return err
	}
	if !r.ok {
		if !exists(r.Else[0]) {
			return fmt.Errorf("%w: instance %q", ErrNotFound, old.Identity)
		}
		return fmt.Errorf("%w: instance %q", ErrConflict, old.Identity)
	}
	i.committed(r.rev)
	return nil
}

// DeleteInstance removes an instance read at i.Rev with its claim and
// indexes, in one transaction; ErrConflict if it changed since, ErrNotFound
// if gone.
func (s *Store) DeleteInstance(ctx context.Context, i *Instance, fence ...clientv3.Cmp) error {
	old := i.stored
	if old == nil {
		cur, err := s.GetByIdentity(ctx, i.ChallengeID, i.Identity)
		if err != nil {
			return err
		}
		old = cur.stored
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

// ---- expiry -----------------------------------------------------------

// Expiring names a claimed instance and its until.
type Expiring struct {
	ChallengeID, Identity, SourceID string
	Until                           time.Time
}

// ExpiredBefore lists the claimed instances whose until is before t, oldest
// first, in one range read of the expiry index (limit 0 = all).
func (s *Store) ExpiredBefore(ctx context.Context, t time.Time, limit int64) ([]Expiring, error) {
	resp, err := s.cli.Get(ctx, s.expDir(), clientv3.WithRange(s.expBound(t)), clientv3.WithLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("store: expired: %w", err)
	}
	out := make([]Expiring, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		parts := strings.Split(strings.TrimPrefix(string(kv.Key), s.expDir()), "/")
		if len(parts) != 3 {
			continue
		}
		var nanos int64
		if _, err := fmt.Sscan(parts[0], &nanos); err != nil {
			continue
		}
		out = append(out, Expiring{ChallengeID: unseg(parts[1]), Identity: unseg(parts[2]), SourceID: string(kv.Value), Until: time.Unix(0, nanos).UTC()})
	}
	return out, nil
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

// SnapshotAll reads every challenge with its instances at one revision
// (QueryChallenge/QueryInstance without a stop-the-world lock), ordered by
// escaped challenge id.
func (s *Store) SnapshotAll(ctx context.Context) ([]*Snapshot, error) {
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

// CountChallenge returns how many instances of challenge cid are claimed
// and pooled (pool refill decisions), at one revision.
func (s *Store) CountChallenge(ctx context.Context, cid string) (claimed, pooled int64, err error) {
	resp, err := s.cli.Txn(ctx).Then(countOp(s.instDir(cid)), countOp(s.poolDir(cid))).Commit()
	if err != nil {
		return 0, 0, fmt.Errorf("store: count challenge: %w", err)
	}
	all := resp.Responses[0].GetResponseRange().Count
	pooled = resp.Responses[1].GetResponseRange().Count
	return all - pooled, pooled, nil
}
