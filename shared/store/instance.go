package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
