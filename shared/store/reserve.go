package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Reservations: uniqueness of (challenge, source), and the stacks being created.

// Reserve books identity for a stack about to be created on challenge cid,
// bound to lease (the request's lock lease) so that a crash frees it:
//   - for a source (sid != ""), in one transaction that fails with
//     ErrExists when the source already has an instance or a reservation;
//   - for the pool (sid == ""), a pool spin-up: counted as Reserved by
//     PoolCounts.
//
// Either way a pending marker for identity is written (ListPending). ErrNotFound when the challenge is gone, ErrExists when the
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
