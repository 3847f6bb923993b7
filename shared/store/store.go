// Package store keeps challfn's records in etcd: challenges, instances,
// source claims, pool members and reservations, as JSON values changed only
// in transactions (compare revision, then put).
//
// Key layout (P = prefix, default /challfn; every id segment is
// url.PathEscape'd and every prefix used for a scan ends with "/", so
// challenge "1" never matches challenge "10"):
//
//	P/chall/<challenge>                  Challenge
//	P/inst/<challenge>/<identity>        Instance, the canonical record (claimed and pooled)
//	P/src/<source>/<challenge>           copy of the Instance claimed by source: the claim
//	                                     itself (uniqueness of (challenge, source)) and the
//	                                     by-source index (QueryInstance in one range)
//	P/pool/<challenge>/<identity>        copy of a pooled (unclaimed) Instance; the lowest
//	                                     key is the next one claimed
//	P/resv/<challenge>/<source>          identity being created for source (lease-bound)
//	P/pending/<challenge>/<identity>     stack being created right now, {"sourceId"}
//	                                     ("" = pool spin-up) (lease-bound)
//	P/meta/<name>                        small bookkeeping (janitor)
//
// An instance's until is not stored: it follows from its challenge (timeout, until,
// UpdatedAt) and its LastRenew (see the manager), so that a challenge update changes
// no instance record, and can race with no instance operation.
//
// A create is Reserve (lease-bound: a crash frees it), then the Pulumi
// deployment, then CommitInstance (one transaction: record, claim or pool
// copy, reservation removed) or Unreserve.
//
// Files: store.go (layout, transactions, challenges), reserve.go
// (reservations), pool.go (claims), instance.go (instance reads and writes),
// snapshot.go (consistent reads and counts), meta.go (bookkeeping).
//
// Copies are written in the same transaction as the canonical record, so
// they share its mod revision: Instance.Rev is the same whichever key it was
// read from. Lock keys live under P/lock/ (package lock).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix of every key.
const DefaultPrefix = "/challfn"

// Errors. Callers map them to the contract's errors.
var (
	ErrNotFound      = errors.New("store: not found")
	ErrExists        = errors.New("store: already exists")
	ErrConflict      = errors.New("store: changed concurrently")
	ErrFenced        = errors.New("store: lock lost, write refused")
	ErrNotEmpty      = errors.New("store: challenge still has instances")
	ErrPoolEmpty     = fmt.Errorf("%w: no pooled instance", ErrNotFound) // is also ErrNotFound
	ErrNoReservation = errors.New("store: reservation lost")
	ErrInvalid       = errors.New("store: invalid record")
)

// Challenge is a registered challenge.
type Challenge struct {
	ID         string            `json:"id"`
	Scenario   string            `json:"scenario"` // reference as given
	Digest     string            `json:"digest,omitempty"`
	Project    string            `json:"project,omitempty"`
	Timeout    *time.Duration    `json:"timeout,omitempty"` // integer nanoseconds
	Until      *time.Time        `json:"until,omitempty"`
	Additional map[string]string `json:"additional,omitempty"`
	Min        int64             `json:"min"`
	Max        int64             `json:"max"`
	// Generation counts the changes instances must follow (scenario,
	// additional); an instance at a lower generation is to be updated, with
	// Strategy, the strategy of the update that made Generation: a later
	// update that changes neither keeps it.
	Generation int64  `json:"generation,omitempty"`
	Strategy   string `json:"strategy,omitempty"`
	// Round counts the updates that asked instances to converge; a failure
	// recorded at an earlier round is retried by the next one.
	Round int64 `json:"round,omitempty"`
	// UpdatedAt is when the challenge was last updated: every claimed
	// instance's until counts from the later of its LastRenew and this
	// (docs/contract.md §4.4: an update resets the until of every instance).
	UpdatedAt time.Time `json:"updatedAt,omitzero"`
	// Deleting hides the challenge while its instances are destroyed.
	Deleting bool  `json:"deleting,omitempty"`
	Rev      int64 `json:"-"` // etcd mod revision, for compare-and-swap
}

// Instance is a deployed stack: claimed by a source, or pooled (SourceID "").
type Instance struct {
	ChallengeID    string            `json:"challengeId"`
	Identity       string            `json:"identity"`
	SourceID       string            `json:"sourceId,omitempty"`
	Since          time.Time         `json:"since"`
	LastRenew      time.Time         `json:"lastRenew"`
	ConnectionInfo string            `json:"connectionInfo,omitempty"`
	Flags          []string          `json:"flags,omitempty"`
	Additional     map[string]string `json:"additional,omitempty"` // the request's own map
	Digest         string            `json:"digest,omitempty"`     // scenario deployed
	Project        string            `json:"project,omitempty"`    // Pulumi project deployed
	// Generation of the challenge the stack was last deployed at;
	// FailedGeneration the last one it failed to reach, at update round
	// FailedRound, with LastError.
	Generation       int64  `json:"generation,omitempty"`
	FailedGeneration int64  `json:"failedGeneration,omitempty"`
	FailedRound      int64  `json:"failedRound,omitempty"`
	LastError        string `json:"lastError,omitempty"`
	DeleteFailed     bool   `json:"deleteFailed,omitempty"` // last destroy failed (LastError)
	// Draining: a pooled instance withdrawn from the pool to be destroyed
	// (Withdraw); no claim can take it any more.
	Draining bool  `json:"draining,omitempty"`
	Rev      int64 `json:"-"`

	// stored is the record as read at Rev: which index keys to replace.
	stored *Instance
}

// Pooled reports whether no source claimed the instance.
func (i *Instance) Pooled() bool { return i.SourceID == "" }

// Store reads and writes the records.
type Store struct {
	cli  *clientv3.Client
	p    string // prefix + "/"
	page int64
	// claims spreads this process's concurrent pool claims (claiming.go).
	claims claiming
}

// New returns a Store using keys under prefix (DefaultPrefix if empty).
func New(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{cli: cli, p: strings.TrimSuffix(prefix, "/") + "/", page: 2000}
}

func seg(s string) string { return url.PathEscape(s) }

func unseg(s string) string {
	u, err := url.PathUnescape(s)
	if err != nil {
		return s
	}
	return u
}

func (s *Store) challKey(id string) string { return s.p + "chall/" + seg(id) }
func (s *Store) challDir() string          { return s.p + "chall/" }
func (s *Store) instDir(cid string) string { return s.p + "inst/" + seg(cid) + "/" }
func (s *Store) instKey(cid, identity string) string {
	return s.instDir(cid) + seg(identity)
}
func (s *Store) srcDir(sid string) string      { return s.p + "src/" + seg(sid) + "/" }
func (s *Store) srcKey(cid, sid string) string { return s.srcDir(sid) + seg(cid) }
func (s *Store) poolDir(cid string) string     { return s.p + "pool/" + seg(cid) + "/" }
func (s *Store) poolKey(cid, identity string) string {
	return s.poolDir(cid) + seg(identity)
}
func (s *Store) resvDir(cid string) string      { return s.p + "resv/" + seg(cid) + "/" }
func (s *Store) resvKey(cid, sid string) string { return s.resvDir(cid) + seg(sid) }
func (s *Store) pendingDir(cid string) string   { return s.p + "pending/" + seg(cid) + "/" }
func (s *Store) pendingKey(cid, identity string) string {
	return s.pendingDir(cid) + seg(identity)
}

func absent(key string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
}

func emptyDir(dir string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(dir), "=", 0).WithPrefix()
}

func countOp(dir string) clientv3.Op {
	return clientv3.OpGet(dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
}

// txnResult is a committed transaction; on failure, Else holds the
// responses of the diagnostic reads given to commit.
type txnResult struct {
	ok   bool
	rev  int64
	Then []*etcdserverpb.ResponseOp
	Else []*etcdserverpb.ResponseOp
}

// commit runs If(cmps, fence) Then(then) Else(reads). A failure caused by
// the fence is returned as ErrFenced; the nested transaction that tells
// costs no extra round trip.
func (s *Store) commit(ctx context.Context, cmps, fence []clientv3.Cmp, then []clientv3.Op, reads ...clientv3.Op) (txnResult, error) {
	all := append(append(make([]clientv3.Cmp, 0, len(cmps)+len(fence)), cmps...), fence...)
	els := reads
	if len(fence) > 0 {
		els = append([]clientv3.Op{clientv3.OpTxn(fence, nil, nil)}, reads...)
	}
	resp, err := s.cli.Txn(ctx).If(all...).Then(then...).Else(els...).Commit()
	if err != nil {
		return txnResult{}, fmt.Errorf("store: txn: %w", err)
	}
	r := txnResult{ok: resp.Succeeded, rev: resp.Header.Revision}
	if resp.Succeeded {
		r.Then = resp.Responses
		return r, nil
	}
	if len(fence) > 0 {
		if !resp.Responses[0].GetResponseTxn().Succeeded {
			return r, ErrFenced
		}
		r.Else = resp.Responses[1:]
	} else {
		r.Else = resp.Responses
	}
	return r, nil
}

func exists(op *etcdserverpb.ResponseOp) bool {
	return len(op.GetResponseRange().Kvs) > 0
}

// ---- challenges -------------------------------------------------------

// CreateChallenge stores a new challenge; ErrExists if the id is taken.
// c.Rev is set on success.
func (s *Store) CreateChallenge(ctx context.Context, c *Challenge, fence ...clientv3.Cmp) error {
	if c.ID == "" {
		return fmt.Errorf("%w: empty challenge id", ErrInvalid)
	}
	v, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("store: encode challenge: %w", err)
	}
	k := s.challKey(c.ID)
	r, err := s.commit(ctx, []clientv3.Cmp{absent(k)}, fence, []clientv3.Op{clientv3.OpPut(k, string(v))})
	if err != nil {
		return err
	}
	if !r.ok {
		return fmt.Errorf("%w: challenge %q", ErrExists, c.ID)
	}
	c.Rev = r.rev
	return nil
}

// GetChallenge reads a challenge; ErrNotFound if absent.
func (s *Store) GetChallenge(ctx context.Context, id string) (*Challenge, error) {
	resp, err := s.cli.Get(ctx, s.challKey(id))
	if err != nil {
		return nil, fmt.Errorf("store: get challenge: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: challenge %q", ErrNotFound, id)
	}
	return decodeChallenge(resp.Kvs[0])
}

func decodeChallenge(kv *mvccpb.KeyValue) (*Challenge, error) {
	var c Challenge
	if err := json.Unmarshal(kv.Value, &c); err != nil {
		return nil, fmt.Errorf("store: decode %s: %w", kv.Key, err)
	}
	c.Rev = kv.ModRevision
	return &c, nil
}

// UpdateChallenge replaces a challenge read at c.Rev (ErrConflict if it
// changed since, ErrNotFound if gone) together with instances of it that
// change with it (e.g. their until), each also compared on its Rev. Up to
// txnInstances instances go in the challenge's transaction; more are written
// first, in batches of that size, so a failure part-way leaves those batches
// applied (retrying the update is idempotent). c.Rev and the instances'
// Rev are updated on success.
func (s *Store) UpdateChallenge(ctx context.Context, c *Challenge, instances []*Instance, fence ...clientv3.Cmp) error {
	for len(instances) > txnInstances {
		if err := s.putInstances(ctx, nil, instances[:txnInstances], fence); err != nil {
			return err
		}
		instances = instances[txnInstances:]
	}
	return s.putInstances(ctx, c, instances, fence)
}

// txnInstances bounds the instances written in one transaction (≤ 4 ops
// each; etcd's default --max-txn-ops is 128).
const txnInstances = 24

// putInstances writes c (if not nil) and instances in one transaction.
func (s *Store) putInstances(ctx context.Context, c *Challenge, instances []*Instance, fence []clientv3.Cmp) error {
	var cmps []clientv3.Cmp
	var ops, reads []clientv3.Op
	if c != nil {
		v, err := json.Marshal(c)
		if err != nil {
			return fmt.Errorf("store: encode challenge: %w", err)
		}
		k := s.challKey(c.ID)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", c.Rev),
			clientv3.Compare(clientv3.CreateRevision(k), ">", 0)) // a Rev of 0 matches an absent key
		ops = append(ops, clientv3.OpPut(k, string(v)))
		reads = append(reads, clientv3.OpGet(k, clientv3.WithKeysOnly()))
	}
	for _, i := range instances {
		old, err := s.storedOf(ctx, i)
		if err != nil {
			return err
		}
		ic, iops, err := s.replaceOps(old, i.Rev, i)
		if err != nil {
			return err
		}
		cmps, ops = append(cmps, ic...), append(ops, iops...)
	}
	r, err := s.commit(ctx, cmps, fence, ops, reads...)
	if err != nil {
		return err
	}
	if !r.ok {
		switch {
		case c == nil:
			return fmt.Errorf("%w: instances of a challenge", ErrConflict)
		case !exists(r.Else[0]):
			return fmt.Errorf("%w: challenge %q", ErrNotFound, c.ID)
		}
		return fmt.Errorf("%w: challenge %q or its instances", ErrConflict, c.ID)
	}
	if c != nil {
		c.Rev = r.rev
	}
	for _, i := range instances {
		i.committed(r.rev)
	}
	return nil
}

// DeleteChallenge removes a challenge with its pool, reservations and
// pending markers, in one transaction, only when it has no instance left
// (the caller destroys the stacks first): ErrNotEmpty otherwise.
func (s *Store) DeleteChallenge(ctx context.Context, id string, fence ...clientv3.Cmp) error {
	k := s.challKey(id)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(k), ">", 0), emptyDir(s.instDir(id))}
	r, err := s.commit(ctx, cmps, fence, []clientv3.Op{
		clientv3.OpDelete(k),
		clientv3.OpDelete(s.poolDir(id), clientv3.WithPrefix()),
		clientv3.OpDelete(s.resvDir(id), clientv3.WithPrefix()),
		clientv3.OpDelete(s.pendingDir(id), clientv3.WithPrefix()),
	}, clientv3.OpGet(k, clientv3.WithKeysOnly()), countOp(s.instDir(id)))
	if err != nil {
		return err
	}
	if !r.ok {
		switch {
		case !exists(r.Else[0]):
			return fmt.Errorf("%w: challenge %q", ErrNotFound, id)
		}
		return fmt.Errorf("%w: challenge %q has %d", ErrNotEmpty, id, r.Else[1].GetResponseRange().Count)
	}
	return nil
}

// rangeAll reads every key under dir at the latest revision, page by page
// (later pages at the revision of the first), and returns that revision.
func (s *Store) rangeAll(ctx context.Context, dir string) ([]*mvccpb.KeyValue, int64, error) {
	return s.rangeFrom(ctx, 0, dir, clientv3.GetPrefixRangeEnd(dir))
}

// rangeFrom reads [from, end) at revision rev (0 = latest), page by page.
func (s *Store) rangeFrom(ctx context.Context, rev int64, from, end string) ([]*mvccpb.KeyValue, int64, error) {
	var out []*mvccpb.KeyValue
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(s.page)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.cli.Get(ctx, from, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("store: range %s: %w", from, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		out = append(out, resp.Kvs...)
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
