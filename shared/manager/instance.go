package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/iac"
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

// deploy creates the stack of a new instance and commits its record. It never
// leaves a stack without a record: when the commit fails (e.g. the lock's
// lease was lost meanwhile), the stack is destroyed again.
func (m *Manager) deploy(ctx context.Context, c *store.Challenge, id, sourceID string, additional map[string]string, held Held) (*store.Instance, error) {
	sc, err := m.o.Scenarios.Get(ctx, c.Digest)
	if err != nil {
		return nil, err
	}
	outs, err := m.engineCreate(ctx, deployOp(sourceID), sc.Program, id, merge(c.Additional, additional))
	if err != nil {
		return nil, failed("Deployment of the instance", err)
	}
	now := m.now()
	in := &store.Instance{
		ChallengeID:    c.ID,
		Identity:       id,
		SourceID:       sourceID,
		Since:          now,
		LastRenew:      now,
		ConnectionInfo: outs.ConnectionInfo,
		Flags:          outs.Flags,
		Additional:     additional,
		Digest:         c.Digest,
		Project:        sc.Program.Project,
		Generation:     c.Generation,
	}
	if err := m.o.Records.Under(held).CommitInstance(ctx, in); err != nil {
		if commitRefused(err) {
			if derr := m.engineDestroy(context.WithoutCancel(ctx), opRollback, in.Project, id); derr != nil {
				m.log.ErrorContext(ctx, "destroying an instance whose record could not be saved; the janitor will retry", "error", derr)
			}
		} else {
			// etcd did not answer: the commit may still be applied. Destroying
			// now could leave a record without stack; the janitor destroys the
			// stack later if no record knows it.
			m.log.WarnContext(ctx, "outcome of an instance commit unknown; stack kept for the janitor", "error", err)
		}
		return nil, fmt.Errorf("saving instance: %w", err)
	}
	return in, nil
}

// commitRefused tells a commit that etcd evaluated and refused (nothing
// written) from one whose outcome is unknown (timeout, no leader).
func commitRefused(err error) bool {
	for _, e := range []error{store.ErrFenced, store.ErrNoReservation, store.ErrExists, store.ErrConflict, store.ErrInvalid, store.ErrNotFound} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// redeployClaimed re-runs `up` on a just-claimed pooled instance with the
// request's additional values (docs/contract.md §4.6), under the instance's writer
// lock. If that fails the instance is destroyed and forgotten (upstream kept a
// broken claim, so every retry got 409): the player can simply ask again.
func (m *Manager) redeployClaimed(ctx context.Context, c *store.Challenge, claimed *store.Instance) (*api.Instance, error) {
	ctx = telemetry.WithIdentity(ctx, claimed.Identity)
	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: c.ID, ChallengeMode: lock.Read, Instance: claimed.Identity, InstanceMode: lock.Write})
	if err != nil {
		return nil, err
	}
	defer held.Release(ctx)
	// What happened to the claim between its transaction and this lock (an
	// update brought it to the challenge's generation with these very values,
	// or the player deleted it) is what counts.
	in, err := m.o.Records.InstanceByIdentity(ctx, c.ID, claimed.Identity)
	if errors.Is(err, store.ErrNotFound) || err == nil && in.SourceID != claimed.SourceID {
		return nil, apierr.Unavailable("The instance was deleted while being set up, try again.")
	}
	if err != nil {
		return nil, err
	}
	err = m.applyAdditional(ctx, c, in, held)
	if err == nil {
		return toAPIInstance(c, in), nil
	}
	if derr := m.destroy(ctx, opRollback, in, c.Round, held); derr != nil {
		m.log.ErrorContext(ctx, "destroying a claimed instance whose update failed", "error", derr)
	}
	return nil, err
}

// applyAdditional deploys a claimed instance again with its own additional
// values on top of the challenge's, and records its new outputs in in.
func (m *Manager) applyAdditional(ctx context.Context, c *store.Challenge, in *store.Instance, held Held) error {
	sc, err := m.o.Scenarios.Get(ctx, in.Digest)
	if err != nil {
		return err
	}
	_, outs, err := m.engineUpdate(ctx, opUpdate, sc.Program, sc.Program, iac.UpdateInPlace, in.Identity, merge(c.Additional, in.Additional))
	if err != nil {
		return failed("Deployment of the instance", err)
	}
	got, err := m.o.Records.Under(held).ModifyInstance(ctx, c.ID, in.Identity, func(cur *store.Instance) error {
		cur.ConnectionInfo, cur.Flags = outs.ConnectionInfo, outs.Flags
		return nil
	})
	if err != nil {
		return err
	}
	*in = *got
	return nil
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

// destroy destroys an instance's stack from its stored project and identity
// (never from the challenge's current scenario, which may have changed) and
// removes its record. On failure the record stays, marked as failed at the
// challenge's update round, so the deletion can be retried (by the client,
// the broker or the janitor).
//
// The record removed is the current one, whatever was written to it during the
// destroy (a renewal): a stack that is gone must leave no record behind. Only a
// lost lock (ErrFenced) keeps it, for the janitor to repair.
func (m *Manager) destroy(ctx context.Context, op string, in *store.Instance, round int64, held Held) error {
	ctx = context.WithoutCancel(ctx)
	if err := m.engineDestroy(ctx, op, in.Project, in.Identity); err != nil {
		summary := errorSummary(err)
		_, perr := m.o.Records.Under(held).ModifyInstance(ctx, in.ChallengeID, in.Identity, func(cur *store.Instance) error {
			cur.DeleteFailed, cur.FailedRound, cur.LastError = true, round, summary
			return nil
		})
		if perr != nil && !errors.Is(perr, store.ErrNotFound) {
			m.log.WarnContext(ctx, "recording a failed deletion", "error", perr)
		}
		return failed("Destruction of the instance", err)
	}
	if err := m.o.Records.Under(held).RemoveInstance(ctx, in.ChallengeID, in.Identity); err != nil {
		return fmt.Errorf("removing the record of a destroyed stack (the janitor repairs it): %w", err)
	}
	return nil
}

func errorSummary(err error) string {
	var oe *iac.OpError
	if errors.As(err, &oe) && oe.Summary != "" {
		return oe.Summary
	}
	return err.Error()
}

// fillPool handles a pool-fill event: deploy pooled instances while the
// challenge wants more. Decisions and reservations happen under the
// challenge's pool lock, so concurrent or duplicate events never overshoot.
// When a fill of the challenge is already running, the event steps aside:
// the running fill goes on until the pool is full (claims and the janitor
// send fills far more often than a deployment takes, and each used to wait
// for the pool lock while holding a request slot). A fill that ran for
// fillBudget hands the rest to a new event, so that no event handling nears
// the platform's request timeout, however large the pool.
func (m *Manager) fillPool(ctx context.Context, d events.PoolFill) error {
	ctx, span := telemetry.Start(ctx, "pool.fill")
	defer span.End()
	if busy, err := m.o.Locks.InstanceBusy(ctx, d.ChallengeID, poolLockName); err != nil || busy {
		return err
	}
	deadline := m.now().Add(fillBudget)
	for {
		more, err := m.fillOne(ctx, d)
		if err != nil || !more {
			// A failed deployment is not retried by redelivery: the next janitor
			// run asks again, once, instead of a broker re-deploying a failing
			// program in a loop.
			return permanentIfInvalid(err)
		}
		if m.now().After(deadline) {
			m.requestPoolFill(ctx, d.ChallengeID)
			return nil
		}
	}
}

// fillBudget is how long one fill event deploys before handing over to the next.
const fillBudget = 4 * time.Minute

// fillOne deploys one pooled instance if the challenge wants one; more is
// false when it did not need to.
func (m *Manager) fillOne(ctx context.Context, d events.PoolFill) (more bool, err error) {
	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: d.ChallengeID, ChallengeMode: lock.Read, Instance: poolLockName, InstanceMode: lock.Write})
	if err != nil {
		return false, err
	}
	defer held.Release(ctx)
	c, err := m.o.Records.GetChallenge(ctx, d.ChallengeID)
	if errors.Is(err, store.ErrNotFound) || err == nil && c.Deleting {
		return false, nil // gone: nothing to fill
	}
	if err != nil {
		return false, err
	}
	if expiry.Expired(m.now(), c.Until) {
		return false, nil
	}
	counts, err := m.o.Records.PoolCounts(ctx, c.ID)
	if err != nil {
		return false, err
	}
	// Reservations in flight count as pooled: they will be.
	if pool.NewDelta(c.Min, c.Max, counts.Claimed, counts.Pooled+counts.Reserved).Create <= 0 {
		return false, nil
	}
	id := identity.New()
	ctx = telemetry.WithIdentity(ctx, id)
	if err := m.o.Records.Under(held).Reserve(ctx, c.ID, "", id); err != nil {
		return false, err
	}
	// The pool lock stays held during the deployment: fills of one challenge
	// run one at a time (fills of different challenges run in parallel).
	in, err := m.deploy(ctx, c, id, "", nil, held)
	if err != nil {
		_ = m.o.Records.Unreserve(context.WithoutCancel(ctx), c.ID, "", id)
		return false, withIdentity(id, err)
	}
	m.log.InfoContext(ctx, "instance added to pool", "connection_info_set", in.ConnectionInfo != "")
	return true, nil
}

// poolLockName is the instance-level lock that serialises pool decisions of
// a challenge (identities are hex, so it never collides with one).
const poolLockName = "pool"

// updateInstance handles an update event: bring one claimed instance to the
// challenge's current scenario and additional values, with the strategy of
// the update that made the challenge's generation (Challenge.Strategy: a later
// update that changed neither, an until-only PATCH say, cannot change it). It
// is a no-op for an instance already at the challenge's generation (a
// duplicate or late event), gone, or pooled: outdated pooled instances are
// withdrawn by the update and replaced by the pool (UpdateChallenge).
func (m *Manager) updateInstance(ctx context.Context, d events.InstanceUpdate) error {
	ctx, span := telemetry.Start(ctx, "instance.update")
	defer span.End()
	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: d.ChallengeID, ChallengeMode: lock.Read, Instance: d.Identity, InstanceMode: lock.Write})
	if err != nil {
		return err
	}
	defer held.Release(ctx)
	c, err := m.o.Records.GetChallenge(ctx, d.ChallengeID)
	if errors.Is(err, store.ErrNotFound) || err == nil && c.Deleting {
		return nil
	}
	if err != nil {
		return err
	}
	in, err := m.o.Records.InstanceByIdentity(ctx, d.ChallengeID, d.Identity)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if in.Generation >= c.Generation || in.Pooled() {
		return nil
	}
	if err := held.ReleaseChallenge(ctx); err != nil {
		m.log.WarnContext(ctx, "releasing challenge lock early", "error", err)
	}
	fail := func(err error) error {
		summary := errorSummary(err)
		_, perr := m.o.Records.Under(held).ModifyInstance(context.WithoutCancel(ctx), c.ID, in.Identity, func(cur *store.Instance) error {
			cur.FailedGeneration, cur.FailedRound, cur.LastError = c.Generation, c.Round, summary
			return nil
		})
		if perr != nil {
			m.log.WarnContext(ctx, "recording a failed update", "error", perr)
		}
		return err
	}
	oldSc, err := m.o.Scenarios.Get(ctx, in.Digest)
	if err != nil {
		return fail(err)
	}
	newSc, err := m.o.Scenarios.Get(ctx, c.Digest)
	if err != nil {
		return fail(err)
	}
	strategy := iac.Strategy(c.Strategy)
	if strategy == "" {
		strategy = iac.UpdateInPlace
	}
	newID, outs, err := m.engineUpdate(ctx, opUpdate, oldSc.Program, newSc.Program, strategy, in.Identity, merge(c.Additional, in.Additional))
	if err != nil && !errors.Is(err, iac.ErrOldNotDestroyed) {
		return permanentIfInvalid(fail(err))
	}
	oldErr := err
	_, err = m.o.Records.Under(held).ModifyInstance(context.WithoutCancel(ctx), c.ID, in.Identity, func(cur *store.Instance) error {
		cur.Identity, cur.ConnectionInfo, cur.Flags = newID, outs.ConnectionInfo, outs.Flags
		cur.Digest, cur.Project, cur.Generation = c.Digest, newSc.Program.Project, c.Generation
		cur.FailedGeneration, cur.FailedRound, cur.LastError = 0, 0, ""
		return nil
	})
	if err != nil {
		if newID != in.Identity && errors.Is(err, store.ErrNotFound) {
			// No record wants the new side: remove it. On any other failure
			// the commit may have been applied (etcd timeout) or another
			// holder may be at work (lost lock): the janitor repairs.
			_ = m.engineDestroy(context.WithoutCancel(ctx), opRollback, newSc.Program.Project, newID)
		}
		return fmt.Errorf("saving the updated instance: %w", err)
	}
	if oldErr != nil {
		// The new blue-green side is live; the old stack leaked and is the
		// janitor's to remove (a stack without record).
		m.log.ErrorContext(ctx, "old stack of a blue-green update not destroyed; the janitor will retry", "error", oldErr)
	}
	m.log.InfoContext(ctx, "instance updated", "strategy", string(strategy), "new_identity", newID)
	return nil
}

// deleteByIdentity handles a delete event (expiry, pool shrink, challenge
// deletion). Deleting something already gone is success.
func (m *Manager) deleteByIdentity(ctx context.Context, d events.InstanceDelete) error {
	ctx, span := telemetry.Start(ctx, "instance.delete")
	defer span.End()
	if d.Reason == events.ReasonExpired || d.Reason == events.ReasonPoolShrink || d.Reason == events.ReasonRepair {
		// The janitor asks again at its next run if still needed: when
		// the instance is being deleted (an earlier request of the same
		// janitor work), renewed or updated right now, step aside rather
		// than wait. Under load, waiting deletions piled up by the hundred
		// and held the function's request slots.
		if busy, err := m.o.Locks.InstanceBusy(ctx, d.ChallengeID, d.Identity); err != nil || busy {
			return err
		}
	}
	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: d.ChallengeID, ChallengeMode: lock.Read, Instance: d.Identity, InstanceMode: lock.Write})
	if err != nil {
		return err
	}
	defer held.Release(ctx)
	in, err := m.o.Records.InstanceByIdentity(ctx, d.ChallengeID, d.Identity)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := m.o.Records.GetChallenge(ctx, d.ChallengeID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if !stillWanted(d.Reason, c, in, m.now()) {
		return nil // renewed, or claimed, since it was asked for
	}
	if in.Pooled() && !in.Draining {
		// Claims take no instance lock (one transaction on the pool key):
		// out of the pool first, so that no player is handed an instance
		// being destroyed.
		err := m.o.Records.Under(held).Withdraw(ctx, in)
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
			return nil // claimed (or deleted) meanwhile
		}
		if err != nil {
			return err
		}
	}
	// An expired claimed instance frees room under max: the same refill
	// rule as a player's deletion (counted before, under the challenge lock).
	var refill bool
	if d.Reason == events.ReasonExpired {
		counts, nerr := m.o.Records.PoolCounts(ctx, d.ChallengeID)
		refill = nerr == nil && !c.Deleting && !expiry.Expired(m.now(), c.Until) &&
			pool.RefillAfterDelete(c.Min, c.Max, counts.Pooled, counts.Total)
	}
	if err := held.ReleaseChallenge(ctx); err != nil {
		m.log.WarnContext(ctx, "releasing challenge lock early", "error", err)
	}
	var round int64
	if c != nil {
		round = c.Round
	}
	if err := m.destroy(ctx, destroyOp(d.Reason), in, round, held); err != nil {
		return err
	}
	if refill {
		m.requestPoolFill(ctx, d.ChallengeID)
	}
	return nil
}
