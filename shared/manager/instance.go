package manager

import (
	"context"
	"errors"

	"go.opentelemetry.io/otel/attribute"

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
	if expiry.Expired(now, c.Until) {
		return nil, apierr.ChallengeExpired(cid)
	}
	if err := m.o.Limits.CheckAdditional("additional", c.Additional, req.Additional); err != nil {
		return nil, err
	}

	// Pool path.
	cctx, claimSpan := telemetry.Start(ctx, "pool.claim")
	claim, err := m.o.Records.Under(held).ClaimPooled(cctx, cid, sid, func(in *store.Instance) {
		in.LastRenew, in.Additional = now, req.Additional
	})
	claimSpan.SetAttributes(attribute.Bool("pool.hit", err == nil))
	if err == nil {
		claimSpan.SetAttributes(attribute.String(telemetry.LogIdentity, claim.Instance.Identity))
	}
	claimSpan.End()
	switch {
	case errors.Is(err, store.ErrExists):
		return nil, apierr.InstanceAlreadyExists(cid, sid)
	case err != nil && !errors.Is(err, store.ErrNotFound):
		return nil, err
	case err == nil:
		m.log.InfoContext(telemetry.WithIdentity(ctx, claim.Instance.Identity), "instance claimed from pool")
		if pool.RefillAfterClaim(c.Min, c.Max, claim.PooledBefore, claim.Total) {
			m.requestPoolFill(ctx, cid)
		}
		if len(req.Additional) > 0 {
			held.Release(ctx)
			return m.redeployClaimed(ctx, c, claim.Instance)
		}
		return toAPIInstance(c, claim.Instance), nil
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
	return toAPIInstance(c, in), nil
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
		return nil, apierr.InstanceNotFound(challengeID, sourceID)
	}
	if err != nil {
		return nil, err
	}
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
	out := toAPIInstance(c, in)
	out.Additional = nil
	return out, nil
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
