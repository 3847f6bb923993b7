package manager

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/pool"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

// liveChallenge loads a challenge that instance operations may use: a missing
// or deleting one is CHALLENGE_NOT_FOUND.
func (m *Manager) liveChallenge(ctx context.Context, id string) (*store.Challenge, error) {
	c, err := m.o.Records.GetChallenge(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && c.Deleting {
		return nil, apierr.ChallengeNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// CreateInstance gives a source its instance of a challenge (docs/contract.md §4.6):
// from the pool when one is ready (one etcd transaction, no deployment unless
// the request brings additional values), else a fresh deployment. Per-source
// uniqueness is a single etcd transaction (a reservation bound to the
// request's lease), so of concurrent creates exactly one deploys and the
// others get 409. A failed deployment destroys what it created and leaves no
// record; so does a crash (the reservation dies with the lease and the
// janitor removes the stack).
func (m *Manager) CreateInstance(ctx context.Context, req *api.CreateInstanceRequest) (_ *api.Instance, err error) {
	defer func() { err = m.answer(ctx, opInstanceCreate, err) }()
	if err := api.ValidateID("challenge_id", req.ChallengeID); err != nil {
		return nil, err
	}
	if err := api.ValidateID("source_id", req.SourceID); err != nil {
		return nil, err
	}
	cid, sid := req.ChallengeID, req.SourceID
	ctx = telemetry.WithSource(telemetry.WithChallenge(ctx, cid), sid)

	// Hot path: a pool claim fenced by lock.Quiet, one transaction (after
	// a read unless the last claim here saw the pool); the locked path when
	// somebody is at work on the challenge, a fresh deployment when nothing
	// is pooled.
	out, hot, err := m.hotClaim(ctx, req)
	if hot == hotDone {
		return out, err
	}

	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: cid, ChallengeMode: lock.Read})
	if err != nil {
		return nil, err
	}
	defer held.Release(ctx)
	c, err := m.liveChallenge(ctx, cid)
	if err != nil {
		return nil, err
	}
	now := m.now()
	if err := m.checkCreate(c, req, now); err != nil {
		return nil, err
	}

	// Pool path, when the hot one met contention.
	if hot == hotFenced {
		claim, err := m.claimSpan(ctx, "locked", func(ctx context.Context) (*store.Claim, error) {
			return m.o.Records.Under(held).ClaimPooled(ctx, cid, sid, claimSet(req, now))
		})
		switch {
		case errors.Is(err, store.ErrExists):
			return nil, apierr.InstanceAlreadyExists(cid, sid)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return nil, err
		case err == nil:
			held.Release(ctx)
			return m.claimed(ctx, c, claim, req)
		}
	}

	// Fresh path.
	id := identity.New()
	ctx = telemetry.WithIdentity(ctx, id)
	if err := m.o.Records.Under(held).Reserve(ctx, cid, sid, id); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, apierr.InstanceAlreadyExists(cid, sid)
		}
		return nil, err
	}
	in, err := m.deploy(ctx, c, id, sid, req.Additional, held)
	if err != nil {
		_ = m.o.Records.Unreserve(context.WithoutCancel(ctx), cid, sid, id)
		return nil, err
	}
	m.log.InfoContext(ctx, "instance created")
	m.recent.saw(c, in)
	return toAPIInstance(c, in), nil
}

// hot says how the hot path of CreateInstance ended.
type hot int

const (
	hotDone   hot = iota // answered (claimed, or a refusal)
	hotMissed            // nothing pooled: deploy a fresh instance
	hotFenced            // somebody at work on the challenge: take its lock
)

// hotClaim claims a pooled instance without a lock of its own: the checks of
// the locked path on the challenge, then one transaction that asserts the
// challenge unchanged and nobody holding or waiting for its writer lock
// (lock.Quiet). The challenge and pool are what the last claim here saw
// (recent), else one read first. What the challenge's reader lock
// gives the locked path (no PATCH or DELETE of the challenge between the
// checks and the claim), those compares give it.
func (m *Manager) hotClaim(ctx context.Context, req *api.CreateInstanceRequest) (*api.Instance, hot, error) {
	cid, sid := req.ChallengeID, req.SourceID
	quiet, err := m.o.Locks.Quiet(lock.Chain{Challenge: cid, ChallengeMode: lock.Read})
	if err != nil {
		return nil, hotDone, err
	}
	now := m.now()
	var c *store.Challenge
	claim, err := m.claimSpan(ctx, "hot", func(ctx context.Context) (claim *store.Claim, err error) {
		c, claim, err = m.o.Records.Under(quiet).ClaimWithChallenge(ctx, cid, sid, m.recent.takePool(cid), func(c *store.Challenge) error {
			if c.Deleting {
				return apierr.ChallengeNotFound(cid)
			}
			return m.checkCreate(c, req, now)
		}, claimSet(req, now))
		return claim, err
	})
	if err == nil {
		m.recent.putPool(cid, claim.Next)
		m.recent.saw(c, claim.Instance)
	}
	switch {
	case errors.Is(err, store.ErrFenced):
		return nil, hotFenced, nil
	case errors.Is(err, store.ErrPoolEmpty):
		return nil, hotMissed, nil
	case errors.Is(err, store.ErrNotFound):
		return nil, hotDone, apierr.ChallengeNotFound(cid)
	case errors.Is(err, store.ErrExists):
		return nil, hotDone, apierr.InstanceAlreadyExists(cid, sid)
	case err != nil:
		return nil, hotDone, err
	}
	in, err := m.claimed(ctx, c, claim, req)
	return in, hotDone, err
}

// checkCreate is what a live challenge c must allow for req at now.
func (m *Manager) checkCreate(c *store.Challenge, req *api.CreateInstanceRequest, now time.Time) error {
	if expiry.Expired(now, c.Until) {
		return apierr.ChallengeExpired(c.ID)
	}
	return m.o.Limits.CheckAdditional("additional", c.Additional, req.Additional)
}

// claimSet is what a claim for req changes in the pooled record.
func claimSet(req *api.CreateInstanceRequest, now time.Time) func(*store.Instance) {
	return func(in *store.Instance) { in.LastRenew, in.Additional = now, req.Additional }
}

// claimSpan runs a claim in a "pool.claim" span; path is "hot" (lock-free)
// or "locked".
func (m *Manager) claimSpan(ctx context.Context, path string, claim func(context.Context) (*store.Claim, error)) (*store.Claim, error) {
	ctx, span := telemetry.Start(ctx, "pool.claim", trace.WithAttributes(attribute.String("pool.path", path)))
	defer span.End()
	cl, err := claim(ctx)
	span.SetAttributes(attribute.Bool("pool.hit", err == nil), attribute.Bool("pool.fenced", errors.Is(err, store.ErrFenced)))
	if err == nil {
		span.SetAttributes(attribute.String(telemetry.LogIdentity, cl.Instance.Identity))
	}
	return cl, err
}

// claimed finishes a claim made for req (no lock held): the pool refill its
// rule asks for, and the redeployment with the request's additional values.
func (m *Manager) claimed(ctx context.Context, c *store.Challenge, claim *store.Claim, req *api.CreateInstanceRequest) (*api.Instance, error) {
	m.log.InfoContext(telemetry.WithIdentity(ctx, claim.Instance.Identity), "instance claimed from pool")
	if pool.RefillAfterClaim(c.Min, c.Max, claim.PooledBefore, claim.Total) {
		m.requestPoolFill(ctx, c.ID)
	}
	if len(req.Additional) > 0 {
		return m.redeployClaimed(ctx, c, claim.Instance)
	}
	return toAPIInstance(c, claim.Instance), nil
}

// RetrieveInstance returns the instance of a source. Like upstream it answers
// INSTANCE_NOT_FOUND even when the challenge does not exist, and does not
// check expiry.
func (m *Manager) RetrieveInstance(ctx context.Context, challengeID, sourceID string) (_ *api.Instance, err error) {
	defer func() { err = m.answer(ctx, opInstanceRetrieve, err) }()
	if err := api.ValidateID("challenge_id", challengeID); err != nil {
		return nil, err
	}
	if err := api.ValidateID("source_id", sourceID); err != nil {
		return nil, err
	}
	ctx = telemetry.WithChallenge(ctx, challengeID)
	c, in, err := m.o.Records.InstanceWithChallenge(ctx, challengeID, sourceID)
	if errors.Is(err, store.ErrNotFound) {
		m.recent.forget(challengeID, sourceID)
		return nil, apierr.InstanceNotFound(challengeID, sourceID)
	}
	if err != nil {
		return nil, err
	}
	m.recent.saw(c, in) // a player who looks at an instance often renews it next
	return toAPIInstance(c, in), nil
}

// QueryInstances streams the instances of a source across challenges, from
// the by-source index and the challenges (one etcd revision).
func (m *Manager) QueryInstances(ctx context.Context, sourceID string, send func(*api.Instance) error) error {
	if sourceID == "" {
		return nil // upstream's answer: nobody has an empty source id
	}
	if err := api.ValidateID("source_id", sourceID); err != nil {
		return err
	}
	ins, cs, err := m.o.Records.SourceInstances(ctx, sourceID)
	if err != nil {
		return m.answer(ctx, opInstanceQuery, err)
	}
	for _, in := range ins {
		c := cs[in.ChallengeID]
		if c == nil {
			continue // a challenge deleted in a transaction of its own: never here
		}
		if err := send(toAPIInstance(c, in)); err != nil {
			return err
		}
	}
	return nil
}

// lockInstance takes challenge (reader) → instance (writer) for the instance
// of a source, following it if a blue-green update changed its identity
// between the lookup and the lock.
// The returned context is the lock's work context (see acquire).
func (m *Manager) lockInstance(ctx context.Context, c *store.Challenge, sourceID string) (context.Context, *store.Instance, Held, error) {
	for attempt := 0; ; attempt++ {
		in, err := m.o.Records.InstanceBySource(ctx, c.ID, sourceID)
		if errors.Is(err, store.ErrNotFound) {
			return ctx, nil, nil, apierr.InstanceNotFound(c.ID, sourceID)
		}
		if err != nil {
			return ctx, nil, nil, err
		}
		work, held, err := m.acquire(ctx, lock.Chain{Challenge: c.ID, ChallengeMode: lock.Read, Instance: in.Identity, InstanceMode: lock.Write})
		if err != nil {
			return ctx, nil, nil, err
		}
		fresh, err := m.o.Records.InstanceBySource(work, c.ID, sourceID)
		if err == nil && fresh.Identity == in.Identity {
			return work, fresh, held, nil
		}
		held.Release(work)
		if errors.Is(err, store.ErrNotFound) {
			return ctx, nil, nil, apierr.InstanceNotFound(c.ID, sourceID)
		}
		if err != nil {
			return ctx, nil, nil, err
		}
		if attempt == 3 {
			return ctx, nil, nil, apierr.Unavailable("The instance is being updated, try again.")
		}
	}
}

// RenewInstance pushes an instance's expiry (docs/contract.md §4.9). The response has
// no additional values, as upstream.
func (m *Manager) RenewInstance(ctx context.Context, challengeID, sourceID string) (_ *api.Instance, err error) {
	defer func() { err = m.answer(ctx, opInstanceRenew, err) }()
	if err := api.ValidateID("challenge_id", challengeID); err != nil {
		return nil, err
	}
	if err := api.ValidateID("source_id", sourceID); err != nil {
		return nil, err
	}
	ctx = telemetry.WithSource(telemetry.WithChallenge(ctx, challengeID), sourceID)
	if out, ok, err := m.hotRenew(ctx, challengeID, sourceID); ok {
		return out, err
	}
	c, err := m.liveChallenge(ctx, challengeID)
	if err != nil {
		return nil, err
	}
	ctx, in, held, err := m.lockInstance(ctx, c, sourceID)
	if err != nil {
		return nil, err
	}
	defer held.Release(ctx)
	now := m.now()
	if err := checkRenew(c, in, now); err != nil {
		return nil, err
	}
	in, err = m.o.Records.Under(held).ModifyInstance(ctx, c.ID, in.Identity, func(cur *store.Instance) error {
		cur.LastRenew = now
		return nil
	})
	if err != nil {
		return nil, err
	}
	return renewed(c, in), nil
}

// hotRenew renews without a lock of its own: the checks of the locked path
// on the instance and its challenge, then one transaction that asserts both
// records current and nobody holding or waiting for the challenge's writer
// lock or any lock of the instance (lock.Quiet). The records are the ones
// this manager saw last when it has them (one round trip), else read first;
// stale ones come back current from the refused transaction, for one more
// try. ok false: a record missing, changed again, or somebody at work; the
// locked path decides.
func (m *Manager) hotRenew(ctx context.Context, cid, sid string) (_ *api.Instance, ok bool, err error) {
	c, in, seen := m.recent.instance(cid, sid)
	if !seen {
		if c, in, err = m.o.Records.InstanceWithChallenge(ctx, cid, sid); err != nil {
			return nil, false, nil // the locked path gives the precise answer
		}
	}
	for try := 0; ; try++ {
		if c == nil || in == nil || c.Deleting || try == 2 {
			m.recent.forget(cid, sid)
			return nil, false, nil
		}
		now := m.now()
		if err := checkRenew(c, in, now); err != nil {
			if seen {
				// A refusal is judged on the current records only.
				seen = false
				if c, in, err = m.o.Records.InstanceWithChallenge(ctx, cid, sid); err != nil {
					return nil, false, nil
				}
				continue
			}
			return nil, true, err
		}
		quiet, err := m.o.Locks.Quiet(lock.Chain{Challenge: cid, ChallengeMode: lock.Read, Instance: in.Identity, InstanceMode: lock.Write})
		if err != nil {
			return nil, true, err
		}
		out, err := m.o.Records.Under(quiet).RenewInstance(ctx, c, in, now)
		var stale *store.Stale
		switch {
		case err == nil:
			m.recent.saw(c, out)
			return renewed(c, out), true, nil
		case errors.As(err, &stale):
			c, in, seen = stale.Challenge, stale.Instance, false
		case errors.Is(err, store.ErrFenced):
			m.recent.forget(cid, sid)
			return nil, false, nil
		default:
			return nil, true, err
		}
	}
}

// renewed is a renewal's answer: no additional values, as upstream.
func renewed(c *store.Challenge, in *store.Instance) *api.Instance {
	out := toAPIInstance(c, in)
	out.Additional = nil
	return out
}

// DeleteInstance destroys the instance of a source and forgets it
// (docs/contract.md §4.10), then refills the pool if its rule says so.
func (m *Manager) DeleteInstance(ctx context.Context, challengeID, sourceID string) (err error) {
	defer func() { err = m.answer(ctx, opInstanceDelete, err) }()
	if err := api.ValidateID("challenge_id", challengeID); err != nil {
		return err
	}
	if err := api.ValidateID("source_id", sourceID); err != nil {
		return err
	}
	ctx = telemetry.WithSource(telemetry.WithChallenge(ctx, challengeID), sourceID)
	c, err := m.liveChallenge(ctx, challengeID)
	if err != nil {
		return err
	}
	ctx, in, held, err := m.lockInstance(ctx, c, sourceID)
	if err != nil {
		return err
	}
	defer held.Release(ctx)
	counts, err := m.o.Records.PoolCounts(ctx, challengeID)
	if err != nil {
		return err
	}
	if err := held.ReleaseChallenge(ctx); err != nil {
		m.log.WarnContext(ctx, "releasing challenge lock early", "error", err)
	}
	ctx = telemetry.WithIdentity(ctx, in.Identity)
	if err := m.destroy(ctx, opDelete, in, c.Round, held); err != nil {
		return err
	}
	m.log.InfoContext(ctx, "instance deleted")
	if pool.RefillAfterDelete(c.Min, c.Max, counts.Pooled, counts.Total) && !expiry.Expired(m.now(), c.Until) {
		m.requestPoolFill(ctx, challengeID)
	}
	return nil
}
