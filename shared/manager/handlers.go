package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/pool"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

// The handlers of the asynchronous work's events (docs/design.md, decision 4):
// each is idempotent, acts on the records as they are when it runs (the
// payload carries keys only), and steps aside when its work is done already.

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

// HandleEvent runs one unit of asynchronous work, with the handler of its
// type. The error it returns says whether to retry: events.Permanent for
// events that can never succeed, anything else for transient failures (see
// events.Result).
func (m *Manager) HandleEvent(ctx context.Context, e cloudevents.Event) (err error) {
	defer func() { m.report(ctx, "event "+e.Type(), err) }()
	if e, err = events.Unwrap(e); err != nil {
		return err
	}
	h, ok := eventHandlers[e.Type()]
	if !ok {
		return events.Permanent(fmt.Errorf("unknown event type %q", e.Type()))
	}
	ctx, err = h(m, ctx, e)
	return err
}

// eventHandler decodes an event's payload (keys only) and runs its work; the
// context it returns names the challenge and identity, for the log line.
type eventHandler func(m *Manager, ctx context.Context, e cloudevents.Event) (context.Context, error)

// eventHandlers: one per event type.
var eventHandlers = map[string]eventHandler{
	events.TypePoolFill: handle((*Manager).fillPool, func(d events.PoolFill) (string, string) { return d.ChallengeID, "" }),
	events.TypeInstanceUpdate: handle((*Manager).updateInstance,
		func(d events.InstanceUpdate) (string, string) { return d.ChallengeID, d.Identity }),
	events.TypeInstanceDelete: handle((*Manager).deleteByIdentity,
		func(d events.InstanceDelete) (string, string) { return d.ChallengeID, d.Identity }),
}

func handle[T any](run func(*Manager, context.Context, T) error, keys func(T) (challenge, identity string)) eventHandler {
	return func(m *Manager, ctx context.Context, e cloudevents.Event) (context.Context, error) {
		var d T
		if err := events.Decode(e, &d); err != nil {
			return ctx, err
		}
		cid, id := keys(d)
		ctx = telemetry.WithChallenge(ctx, cid)
		if id != "" {
			ctx = telemetry.WithIdentity(ctx, id)
		}
		return ctx, run(m, ctx, d)
	}
}

// permanentIfInvalid turns the errors a redelivery should not retry into
// permanent ones: an unknown strategy, and a failed engine operation, which is
// already recorded on the instance (FailedGeneration, LastError) — re-running
// a failing `pulumi up` six times helps nobody; the client retries by sending
// its PATCH again. Store and etcd errors stay transient.
func permanentIfInvalid(err error) error {
	var oe *iac.OpError
	if errors.Is(err, iac.ErrUnknownStrategy) || errors.As(err, &oe) {
		return events.Permanent(err)
	}
	return err
}
