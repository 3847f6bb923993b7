// Package memstore holds challfn's records and locks in memory, with the
// semantics of the etcd ones (shared/store, shared/lock) as the manager sees
// them: the same errors, revisions compared by every write, reservations that
// vanish with the locks they were made under, and writes refused once those
// locks are lost. It passes the conformance suite the etcd ones pass
// (shared/storetest), so the manager's rules can be unit-tested on it in
// milliseconds, without etcd.
package memstore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/store"
)

// Store is records and locks in memory; the zero value is not usable, use New.
type Store struct {
	mu  sync.Mutex
	rev int64

	challenges map[string]*store.Challenge
	instances  map[string]map[string]*store.Instance // challenge → identity → record
	resv       map[string]map[string]booking         // challenge → source → booking
	pending    map[string]map[string]booking         // challenge → identity → booking
	meta       map[string][]byte

	queues  map[string][]entry // lock level → acquisitions in order
	changed chan struct{}      // closed when a lock queue changes
}

// booking is a reservation or pending marker, alive as long as its locks.
type booking struct {
	identity, source string
	held             *Held
}

// New returns an empty Store.
func New() *Store {
	return &Store{
		challenges: map[string]*store.Challenge{},
		instances:  map[string]map[string]*store.Instance{},
		resv:       map[string]map[string]booking{},
		pending:    map[string]map[string]booking{},
		meta:       map[string][]byte{},
		queues:     map[string][]entry{},
		changed:    make(chan struct{}),
	}
}

var (
	_ manager.Records = (*Store)(nil)
	_ manager.Locks   = (*Store)(nil)
)

func (s *Store) next() int64 { s.rev++; return s.rev }

func cloneChallenge(c *store.Challenge) *store.Challenge {
	out := *c
	out.Additional = maps.Clone(c.Additional)
	return &out
}

func cloneInstance(in *store.Instance) *store.Instance {
	out := *in
	out.Additional = maps.Clone(in.Additional)
	out.Flags = slices.Clone(in.Flags)
	return &out
}

// ordered instances as the etcd store returns them: claimed by source,
// pooled by (escaped) identity.
func split(insts map[string]*store.Instance) (claimed, pooled []*store.Instance) {
	for _, in := range insts {
		if in.Pooled() {
			pooled = append(pooled, cloneInstance(in))
		} else {
			claimed = append(claimed, cloneInstance(in))
		}
	}
	slices.SortFunc(claimed, func(a, b *store.Instance) int { return strings.Compare(a.SourceID, b.SourceID) })
	slices.SortFunc(pooled, func(a, b *store.Instance) int {
		return strings.Compare(url.PathEscape(a.Identity), url.PathEscape(b.Identity))
	})
	return claimed, pooled
}

// ---- reads ----

func (s *Store) GetChallenge(_ context.Context, id string) (*store.Challenge, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.challenges[id]
	if !ok {
		return nil, fmt.Errorf("%w: challenge %q", store.ErrNotFound, id)
	}
	return cloneChallenge(c), nil
}

func (s *Store) ChallengeWithInstances(_ context.Context, cid string) (*store.Challenge, []*store.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.challenges[cid]
	if !ok {
		return nil, nil, fmt.Errorf("%w: challenge %q", store.ErrNotFound, cid)
	}
	claimed, _ := split(s.instances[cid])
	return cloneChallenge(c), claimed, nil
}

func (s *Store) AllChallenges(context.Context) ([]*store.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := slices.Collect(maps.Keys(s.challenges))
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(url.PathEscape(a), url.PathEscape(b)) })
	out := make([]*store.Snapshot, 0, len(ids))
	for _, id := range ids {
		claimed, pooled := split(s.instances[id])
		out = append(out, &store.Snapshot{Challenge: cloneChallenge(s.challenges[id]), Claimed: claimed, Pooled: pooled, Revision: s.rev})
	}
	return out, nil
}

func (s *Store) Instances(_ context.Context, cid string) (claimed, pooled []*store.Instance, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	claimed, pooled = split(s.instances[cid])
	return claimed, pooled, nil
}

func (s *Store) InstanceByIdentity(_ context.Context, cid, identity string) (*store.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[cid][identity]
	if !ok {
		return nil, fmt.Errorf("%w: instance %s/%s", store.ErrNotFound, cid, identity)
	}
	return cloneInstance(in), nil
}

// bySource is the instance claimed by sid on cid, or nil. Called with s.mu.
func (s *Store) bySource(cid, sid string) *store.Instance {
	for _, in := range s.instances[cid] {
		if in.SourceID == sid && sid != "" {
			return in
		}
	}
	return nil
}

func (s *Store) InstanceBySource(_ context.Context, cid, sid string) (*store.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.bySource(cid, sid); in != nil {
		return cloneInstance(in), nil
	}
	return nil, fmt.Errorf("%w: instance of %q on %q", store.ErrNotFound, sid, cid)
}

func (s *Store) InstanceWithChallenge(_ context.Context, cid, sid string) (*store.Challenge, *store.Instance, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.challenges[cid]
	in := s.bySource(cid, sid)
	if !ok || in == nil {
		return nil, nil, fmt.Errorf("%w: instance of %q on %q", store.ErrNotFound, sid, cid)
	}
	return cloneChallenge(c), cloneInstance(in), nil
}

func (s *Store) SourceInstances(_ context.Context, sid string) ([]*store.Instance, map[string]*store.Challenge, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ins []*store.Instance
	cs := map[string]*store.Challenge{}
	for id, c := range s.challenges {
		cs[id] = cloneChallenge(c)
	}
	for cid := range s.instances {
		if in := s.bySource(cid, sid); in != nil {
			ins = append(ins, cloneInstance(in))
		}
	}
	slices.SortFunc(ins, func(a, b *store.Instance) int {
		return strings.Compare(url.PathEscape(a.ChallengeID), url.PathEscape(b.ChallengeID))
	})
	return ins, cs, nil
}

func (s *Store) PoolCounts(_ context.Context, cid string) (store.ChallengeCounts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n store.ChallengeCounts
	for _, in := range s.instances[cid] {
		n.Total++
		if in.Pooled() && !in.Draining {
			n.Pooled++
		}
	}
	n.Claimed = n.Total - n.Pooled
	for _, b := range s.pending[cid] {
		if b.source == "" {
			n.Reserved++
		}
	}
	return n, nil
}

func (s *Store) ListPending(_ context.Context, cid string) ([]store.Pending, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Pending
	for c, bs := range s.pending {
		if cid != "" && c != cid {
			continue
		}
		for id, b := range bs {
			out = append(out, store.Pending{ChallengeID: c, Identity: id, SourceID: b.source})
		}
	}
	slices.SortFunc(out, func(a, b store.Pending) int {
		return strings.Compare(a.ChallengeID+"/"+a.Identity, b.ChallengeID+"/"+b.Identity)
	})
	return out, nil
}

func (s *Store) Identities(context.Context) (map[string]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := map[string]bool{}
	for _, insts := range s.instances {
		for id := range insts {
			ids[id] = true
		}
	}
	for _, bs := range s.pending {
		for id := range bs {
			ids[id] = true
		}
	}
	return ids, nil
}

func (s *Store) GetMeta(_ context.Context, name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.meta[name]), nil
}

func (s *Store) PutMeta(_ context.Context, name string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta[name] = slices.Clone(value)
	return nil
}

func (s *Store) Unreserve(_ context.Context, cid, sid, identity string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.resv[cid][sid]; ok && sid != "" && b.identity == identity {
		delete(s.resv[cid], sid)
	}
	delete(s.pending[cid], identity)
	return nil
}

// dropReservations removes what was booked under h. Called with s.mu.
func (s *Store) dropReservations(h *Held) {
	for _, m := range []map[string]map[string]booking{s.resv, s.pending} {
		for _, bs := range m {
			for k, b := range bs {
				if b.held == h {
					delete(bs, k)
				}
			}
		}
	}
}

// Count reads the counts of every record kind (the gauges).
func (s *Store) Count(context.Context) (store.Counts, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := store.Counts{Challenges: int64(len(s.challenges))}
	for _, insts := range s.instances {
		for _, in := range insts {
			n.Instances++
			if in.Pooled() && !in.Draining {
				n.Pooled++
			}
		}
	}
	n.Claimed = n.Instances - n.Pooled
	return n, nil
}

// ---- writes ----

// Under implements manager.Records.
func (s *Store) Under(h manager.Held) manager.Writes {
	w := writes{s: s}
	if h != nil {
		mh, ok := h.(*Held)
		if !ok {
			panic("memstore: records written under a lock that is not a memstore one")
		}
		w.held = mh
	}
	return w
}

// writes apply while their locks are held (Held.lost: ErrFenced).
type writes struct {
	s    *Store
	held *Held
}

// begin takes the store's mutex for one transaction and checks the fence.
func (w writes) begin() error {
	w.s.mu.Lock()
	if w.held != nil && (w.held.lost || w.s.busy(w.held)) {
		w.s.mu.Unlock()
		return store.ErrFenced
	}
	return nil
}

func (w writes) CreateChallenge(_ context.Context, c *store.Challenge) error {
	if c.ID == "" {
		return fmt.Errorf("%w: empty challenge id", store.ErrInvalid)
	}
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	if _, ok := s.challenges[c.ID]; ok {
		return fmt.Errorf("%w: challenge %q", store.ErrExists, c.ID)
	}
	c.Rev = s.next()
	s.challenges[c.ID] = cloneChallenge(c)
	return nil
}

func (w writes) UpdateChallenge(_ context.Context, c *store.Challenge, instances []*store.Instance) error {
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	cur, ok := s.challenges[c.ID]
	if !ok {
		return fmt.Errorf("%w: challenge %q", store.ErrNotFound, c.ID)
	}
	if cur.Rev != c.Rev {
		return fmt.Errorf("%w: challenge %q", store.ErrConflict, c.ID)
	}
	for _, in := range instances {
		old, ok := s.instances[in.ChallengeID][in.Identity]
		if !ok || old.Rev != in.Rev {
			return fmt.Errorf("%w: challenge %q or its instances", store.ErrConflict, c.ID)
		}
		if old.SourceID != in.SourceID || in.ChallengeID != c.ID {
			return fmt.Errorf("%w: an instance cannot move to another challenge or source", store.ErrInvalid)
		}
	}
	rev := s.next()
	c.Rev = rev
	s.challenges[c.ID] = cloneChallenge(c)
	for _, in := range instances {
		in.Rev = rev
		s.instances[in.ChallengeID][in.Identity] = cloneInstance(in)
	}
	return nil
}

func (w writes) DeleteChallenge(_ context.Context, id string) error {
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	if _, ok := s.challenges[id]; !ok {
		return fmt.Errorf("%w: challenge %q", store.ErrNotFound, id)
	}
	if n := len(s.instances[id]); n > 0 {
		return fmt.Errorf("%w: challenge %q has %d", store.ErrNotEmpty, id, n)
	}
	s.next()
	delete(s.challenges, id)
	delete(s.instances, id)
	delete(s.resv, id)
	delete(s.pending, id)
	return nil
}

func (w writes) Reserve(_ context.Context, cid, sid, identity string) error {
	if identity == "" || cid == "" || w.held == nil {
		return fmt.Errorf("%w: reserve needs a challenge, an identity and a lock", store.ErrInvalid)
	}
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	if _, ok := s.challenges[cid]; !ok {
		return fmt.Errorf("%w: challenge %q", store.ErrNotFound, cid)
	}
	_, inst := s.instances[cid][identity]
	_, pend := s.pending[cid][identity]
	taken := inst || pend
	if sid != "" {
		_, booked := s.resv[cid][sid]
		taken = taken || booked || s.bySource(cid, sid) != nil
	}
	if taken {
		return fmt.Errorf("%w: source %q or identity %q on challenge %q", store.ErrExists, sid, identity, cid)
	}
	s.next()
	b := booking{identity: identity, source: sid, held: w.held}
	if s.pending[cid] == nil {
		s.pending[cid] = map[string]booking{}
	}
	s.pending[cid][identity] = b
	if sid != "" {
		if s.resv[cid] == nil {
			s.resv[cid] = map[string]booking{}
		}
		s.resv[cid][sid] = b
	}
	return nil
}

func (w writes) CommitInstance(_ context.Context, in *store.Instance) error {
	if in.ChallengeID == "" || in.Identity == "" {
		return fmt.Errorf("%w: instance needs a challenge and an identity", store.ErrInvalid)
	}
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	cid := in.ChallengeID
	_, exists := s.instances[cid][in.Identity]
	_, pend := s.pending[cid][in.Identity]
	ok := !exists && pend
	if !in.Pooled() {
		b, booked := s.resv[cid][in.SourceID]
		ok = !exists && booked && b.identity == in.Identity
	}
	if !ok {
		return fmt.Errorf("%w: identity %q (source %q) on challenge %q", store.ErrNoReservation, in.Identity, in.SourceID, cid)
	}
	in.Rev = s.next()
	if s.instances[cid] == nil {
		s.instances[cid] = map[string]*store.Instance{}
	}
	s.instances[cid][in.Identity] = cloneInstance(in)
	delete(s.pending[cid], in.Identity)
	if !in.Pooled() {
		delete(s.resv[cid], in.SourceID)
	}
	return nil
}

func (w writes) ClaimPooled(_ context.Context, cid, sid string, set func(*store.Instance)) (*store.Claim, error) {
	if sid == "" {
		return nil, fmt.Errorf("%w: claim needs a source", store.ErrInvalid)
	}
	if err := w.begin(); err != nil {
		return nil, err
	}
	defer w.s.mu.Unlock()
	return w.s.claim(cid, sid, set)
}

// claim is ClaimPooled's write. Called with s.mu.
func (s *Store) claim(cid, sid string, set func(*store.Instance)) (*store.Claim, error) {
	var pooled []*store.Instance
	for _, in := range s.instances[cid] {
		if in.Pooled() && !in.Draining {
			pooled = append(pooled, in)
		}
	}
	if len(pooled) == 0 {
		return nil, fmt.Errorf("%w: challenge %q", store.ErrPoolEmpty, cid)
	}
	if _, booked := s.resv[cid][sid]; booked || s.bySource(cid, sid) != nil {
		return nil, fmt.Errorf("%w: source %q on challenge %q", store.ErrExists, sid, cid)
	}
	slices.SortFunc(pooled, func(a, b *store.Instance) int {
		return strings.Compare(url.PathEscape(a.Identity), url.PathEscape(b.Identity))
	})
	next := cloneInstance(pooled[0])
	if set != nil {
		set(next)
	}
	next.ChallengeID, next.Identity, next.SourceID, next.Since = cid, pooled[0].Identity, sid, pooled[0].Since
	next.Rev = s.next()
	s.instances[cid][next.Identity] = cloneInstance(next)
	return &store.Claim{Instance: next, PooledBefore: int64(len(pooled)), Total: int64(len(s.instances[cid]))}, nil
}

// ClaimWithChallenge ignores the hint: memory has no round trip to save.
func (w writes) ClaimWithChallenge(ctx context.Context, cid, sid string, _ *store.PoolHint, check func(*store.Challenge) error, set func(*store.Instance)) (*store.Challenge, *store.Claim, error) {
	if sid == "" {
		return nil, nil, fmt.Errorf("%w: claim needs a source", store.ErrInvalid)
	}
	c, err := w.s.GetChallenge(ctx, cid)
	if err != nil {
		return nil, nil, err
	}
	if err := check(c); err != nil {
		return c, nil, err
	}
	// The read and the claim are two steps here as in etcd: the claim
	// asserts the challenge is still the one checked.
	if err := w.begin(); err != nil {
		return c, nil, err
	}
	defer w.s.mu.Unlock()
	if cur, ok := w.s.challenges[cid]; !ok || cur.Rev != c.Rev {
		return c, nil, store.ErrFenced
	}
	claim, err := w.s.claim(cid, sid, set)
	return c, claim, err
}

func (w writes) RenewInstance(_ context.Context, c *store.Challenge, in *store.Instance, at time.Time) (*store.Instance, error) {
	if err := w.begin(); err != nil {
		return nil, err
	}
	s := w.s
	defer s.mu.Unlock()
	cc, ok := s.challenges[c.ID]
	cur, found := s.instances[in.ChallengeID][in.Identity]
	if !ok || cc.Rev != c.Rev || !found || cur.Rev != in.Rev {
		var st store.Stale
		if ok {
			st.Challenge = cloneChallenge(cc)
		}
		if now := s.bySource(in.ChallengeID, in.SourceID); now != nil {
			st.Instance = cloneInstance(now)
		}
		return nil, &st
	}
	next := cloneInstance(cur)
	next.LastRenew = at
	next.Rev = s.next()
	s.instances[in.ChallengeID][in.Identity] = cloneInstance(next)
	return next, nil
}

func (w writes) ModifyInstance(_ context.Context, cid, identity string, change func(*store.Instance) error) (*store.Instance, error) {
	if err := w.begin(); err != nil {
		return nil, err
	}
	s := w.s
	defer s.mu.Unlock()
	cur, ok := s.instances[cid][identity]
	if !ok {
		return nil, fmt.Errorf("%w: instance %s/%s", store.ErrNotFound, cid, identity)
	}
	next := cloneInstance(cur)
	if err := change(next); errors.Is(err, store.ErrUnchanged) {
		return cloneInstance(cur), nil
	} else if err != nil {
		return nil, err
	}
	if next.ChallengeID != cur.ChallengeID || next.SourceID != cur.SourceID {
		return nil, fmt.Errorf("%w: an instance cannot move to another challenge or source", store.ErrInvalid)
	}
	if next.Identity != identity {
		if _, taken := s.instances[cid][next.Identity]; taken {
			return nil, fmt.Errorf("%w: identity %q is taken", store.ErrConflict, next.Identity)
		}
		delete(s.instances[cid], identity)
		delete(s.pending[cid], next.Identity)
	}
	next.Rev = s.next()
	s.instances[cid][next.Identity] = cloneInstance(next)
	return next, nil
}

func (w writes) RemoveInstance(_ context.Context, cid, identity string) error {
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	if _, ok := s.instances[cid][identity]; ok {
		s.next()
		delete(s.instances[cid], identity)
		delete(s.pending[cid], identity)
	}
	return nil
}

func (w writes) Withdraw(_ context.Context, in *store.Instance) error {
	if !in.Pooled() {
		return fmt.Errorf("%w: instance %q is claimed", store.ErrConflict, in.Identity)
	}
	if err := w.begin(); err != nil {
		return err
	}
	s := w.s
	defer s.mu.Unlock()
	cur, ok := s.instances[in.ChallengeID][in.Identity]
	if !ok {
		return fmt.Errorf("%w: instance %q", store.ErrNotFound, in.Identity)
	}
	if cur.Rev != in.Rev {
		return fmt.Errorf("%w: instance %q", store.ErrConflict, in.Identity)
	}
	in.Draining = true
	in.Rev = s.next()
	s.instances[in.ChallengeID][in.Identity] = cloneInstance(in)
	return nil
}
