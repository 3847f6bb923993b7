package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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
