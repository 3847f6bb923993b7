package manager

import (
	"context"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/store"
)

// The manager's dependencies, as interfaces it owns: the rules are written
// and unit-tested against them (shared/memstore holds records and locks in
// memory and passes the conformance suite of shared/storetest, like the etcd
// ones), and production wires the real parts (OnEtcd, shared/iac,
// shared/scenario, shared/events).

// Records are the challenges and instances. Reads see one etcd revision
// each. Writes go through a view bound to the locks they are made under.
type Records interface {
	GetChallenge(ctx context.Context, id string) (*store.Challenge, error)
	// ChallengeWithInstances: the challenge and its claimed instances.
	ChallengeWithInstances(ctx context.Context, cid string) (*store.Challenge, []*store.Instance, error)
	// AllChallenges: every challenge with its instances, one revision.
	AllChallenges(ctx context.Context) ([]*store.Snapshot, error)
	Instances(ctx context.Context, cid string) (claimed, pooled []*store.Instance, err error)
	InstanceByIdentity(ctx context.Context, cid, identity string) (*store.Instance, error)
	InstanceBySource(ctx context.Context, cid, sid string) (*store.Instance, error)
	InstanceWithChallenge(ctx context.Context, cid, sid string) (*store.Challenge, *store.Instance, error)
	SourceInstances(ctx context.Context, sid string) ([]*store.Instance, map[string]*store.Challenge, error)
	PoolCounts(ctx context.Context, cid string) (store.ChallengeCounts, error)
	// ListPending: the stacks being created now (cid "" = every challenge).
	ListPending(ctx context.Context, cid string) ([]store.Pending, error)
	// Identities: every identity a record or a pending creation knows.
	Identities(ctx context.Context) (map[string]bool, error)
	GetMeta(ctx context.Context, name string) ([]byte, error)
	PutMeta(ctx context.Context, name string, value []byte) error
	// Unreserve forgets a creation that did not happen (no lock needed: only
	// the reservation of that identity is removed).
	Unreserve(ctx context.Context, cid, sid, identity string) error
	// Under is the view whose writes apply only while every lock of h is
	// still held (store.ErrFenced otherwise: a holder frozen past its lease
	// cannot overwrite what the next holder did), and whose reservations
	// vanish with h. nil: no lock (the janitor's own writes).
	Under(h Held) Writes
}

// Writes are the record changes, each one transaction (see shared/store for
// the semantics; store.ModifyInstance and RemoveInstance apply to the
// current record, whatever was written since the caller read it).
type Writes interface {
	CreateChallenge(ctx context.Context, c *store.Challenge) error
	UpdateChallenge(ctx context.Context, c *store.Challenge, instances []*store.Instance) error
	DeleteChallenge(ctx context.Context, id string) error
	// Reserve books identity for a creation, bound to the view's locks.
	Reserve(ctx context.Context, cid, sid, identity string) error
	CommitInstance(ctx context.Context, in *store.Instance) error
	ClaimPooled(ctx context.Context, cid, sid string, set func(*store.Instance)) (*store.Claim, error)
	// ClaimWithChallenge checks the challenge and claims as ClaimPooled,
	// asserting the challenge is the one checked; it reads the challenge
	// and pool first unless hint (an earlier claim's Next, which drivers
	// may ignore) saves the read.
	ClaimWithChallenge(ctx context.Context, cid, sid string, hint *store.PoolHint, check func(*store.Challenge) error, set func(*store.Instance)) (*store.Challenge, *store.Claim, error)
	// RenewInstance sets in's LastRenew, asserting in and its challenge c
	// are the current records (*store.Stale with the current ones
	// otherwise).
	RenewInstance(ctx context.Context, c *store.Challenge, in *store.Instance, at time.Time) (*store.Instance, error)
	ModifyInstance(ctx context.Context, cid, identity string, change func(*store.Instance) error) (*store.Instance, error)
	RemoveInstance(ctx context.Context, cid, identity string) error
	Withdraw(ctx context.Context, in *store.Instance) error
}

// Held is an acquired lock chain.
type Held interface {
	// Release frees everything held; it runs even when ctx is done.
	Release(ctx context.Context) error
	// ReleaseChallenge drops the challenge level early, keeping the instance.
	ReleaseChallenge(ctx context.Context) error
}

// Locks take lock chains (docs/contract.md §6, fixed as shared/lock says).
type Locks interface {
	// Acquire waits for the chain as long as ctx allows.
	Acquire(ctx context.Context, c lock.Chain) (Held, error)
	// TryLock takes a singleton lock without waiting (lock.ErrLocked).
	TryLock(ctx context.Context, name string) (Held, error)
	// Quiet is chain c held for one write (lock.Quiet): writes under it
	// apply only if nobody holds or waits for a conflicting level of c at
	// that write (store.ErrFenced otherwise); nothing to release.
	Quiet(c lock.Chain) (Held, error)
	// InstanceBusy: someone holds or waits for an instance-level lock.
	InstanceBusy(ctx context.Context, cid, identity string) (bool, error)
}

// Engine is the Pulumi driver (shared/iac).
type Engine interface {
	Create(ctx context.Context, p iac.Program, identity string, additional map[string]string) (iac.Outputs, error)
	Update(ctx context.Context, old, new iac.Program, s iac.Strategy, identity string, additional map[string]string) (string, iac.Outputs, error)
	DestroyStack(ctx context.Context, project, identity string) error
}

// Scenarios resolves and serves scenarios (shared/scenario).
type Scenarios interface {
	Register(ctx context.Context, ref string, additional map[string]string) (*scenario.Scenario, error)
	Resolve(ctx context.Context, ref string) (string, error)
	Get(ctx context.Context, digest string) (*scenario.Scenario, error)
}

// Sender delivers the events of asynchronous work (shared/events: a broker
// over HTTP, Pub/Sub, or in process).
type Sender interface {
	Send(ctx context.Context, e cloudevents.Event) error
}

// OnEtcd gives the manager the records and locks kept in etcd.
func OnEtcd(s *store.Store, l *lock.Locker) (Records, Locks) {
	return etcdRecords{s}, etcdLocks{l}
}

type etcdLocks struct{ l *lock.Locker }

func (e etcdLocks) Acquire(ctx context.Context, c lock.Chain) (Held, error) {
	h, err := e.l.Acquire(ctx, c)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (e etcdLocks) TryLock(ctx context.Context, name string) (Held, error) {
	h, err := e.l.TryLock(ctx, name)
	if err != nil {
		return nil, err
	}
	return h, nil
}

func (e etcdLocks) Quiet(c lock.Chain) (Held, error) {
	q, err := e.l.Quiet(c)
	if err != nil {
		return nil, err
	}
	return q, nil
}

func (e etcdLocks) InstanceBusy(ctx context.Context, cid, identity string) (bool, error) {
	return e.l.InstanceBusy(ctx, cid, identity)
}

type etcdRecords struct{ *store.Store }

func (e etcdRecords) Under(h Held) Writes {
	w := etcdWrites{s: e.Store}
	switch h := h.(type) {
	case nil:
	case *lock.Held:
		w.held, w.fencer = h, h
	case *lock.Quiet:
		w.fencer = h
	default:
		panic("manager: etcd records written under a lock that is not an etcd one")
	}
	return w
}

// etcdWrites adds the fence of the held etcd locks (compares on their keys,
// or lock.Quiet's on the chain's) to every transaction, and binds
// reservations to their lease.
type etcdWrites struct {
	s      *store.Store
	held   *lock.Held // nil under lock.Quiet: no lease
	fencer interface{ Fence() []clientv3.Cmp }
}

func (w etcdWrites) fence() []clientv3.Cmp {
	if w.fencer == nil {
		return nil
	}
	return w.fencer.Fence()
}

func (w etcdWrites) CreateChallenge(ctx context.Context, c *store.Challenge) error {
	return w.s.CreateChallenge(ctx, c, w.fence()...)
}

func (w etcdWrites) UpdateChallenge(ctx context.Context, c *store.Challenge, instances []*store.Instance) error {
	return w.s.UpdateChallenge(ctx, c, instances, w.fence()...)
}

func (w etcdWrites) DeleteChallenge(ctx context.Context, id string) error {
	return w.s.DeleteChallenge(ctx, id, w.fence()...)
}

func (w etcdWrites) Reserve(ctx context.Context, cid, sid, identity string) error {
	if w.held == nil {
		return store.ErrInvalid
	}
	return w.s.Reserve(ctx, cid, sid, identity, w.held.Lease(), w.fence()...)
}

func (w etcdWrites) CommitInstance(ctx context.Context, in *store.Instance) error {
	return w.s.CommitInstance(ctx, in, w.fence()...)
}

func (w etcdWrites) ClaimPooled(ctx context.Context, cid, sid string, set func(*store.Instance)) (*store.Claim, error) {
	return w.s.ClaimPooled(ctx, cid, sid, set, w.fence()...)
}

func (w etcdWrites) ClaimWithChallenge(ctx context.Context, cid, sid string, hint *store.PoolHint, check func(*store.Challenge) error, set func(*store.Instance)) (*store.Challenge, *store.Claim, error) {
	return w.s.ClaimWithChallenge(ctx, cid, sid, hint, check, set, w.fence()...)
}

func (w etcdWrites) RenewInstance(ctx context.Context, c *store.Challenge, in *store.Instance, at time.Time) (*store.Instance, error) {
	return w.s.RenewInstance(ctx, c, in, at, w.fence()...)
}

func (w etcdWrites) ModifyInstance(ctx context.Context, cid, identity string, change func(*store.Instance) error) (*store.Instance, error) {
	return w.s.ModifyInstance(ctx, cid, identity, change, w.fence()...)
}

func (w etcdWrites) RemoveInstance(ctx context.Context, cid, identity string) error {
	return w.s.RemoveInstance(ctx, cid, identity, w.fence()...)
}

func (w etcdWrites) Withdraw(ctx context.Context, in *store.Instance) error {
	return w.s.Withdraw(ctx, in, w.fence()...)
}
