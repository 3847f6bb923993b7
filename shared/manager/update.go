package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

// strategyOf maps the wire enum; an unknown number (possible in JSON) is a 400
// instead of upstream's panic.
func strategyOf(s api.UpdateStrategy) (iac.Strategy, error) {
	switch s {
	case api.UpdateInPlace:
		return iac.UpdateInPlace, nil
	case api.BlueGreen:
		return iac.BlueGreen, nil
	case api.Recreate:
		return iac.Recreate, nil
	}
	return "", apierr.InvalidArgument("update_strategy", "UNKNOWN_STRATEGY",
		fmt.Sprintf("Unknown update strategy %d: use update_in_place, blue_green or recreate.", s))
}

// checkChallenge runs the checks of a challenge's pooler bounds (docs/contract.md §3.4, then
// the configured ceilings) and of its expiry settings (nil = not set or not masked).
func (m *Manager) checkChallenge(paths []string, min, max int64, timeout *time.Duration, until *time.Time) error {
	if err := api.CheckPooler(paths, min, max); err != nil {
		return err
	}
	if err := m.o.Limits.CheckPoolerLimits(paths, min, max); err != nil {
		return err
	}
	if err := api.CheckTimeout(timeout); err != nil {
		return err
	}
	return api.CheckUntil(until)
}

// UpdateChallenge applies a masked update (docs/contract.md §4.4, §3.5).
//
// What the response waits for: the challenge record is updated under the
// challenge writer lock; every instance that must change (new scenario digest
// or new additional values) gets one event, handled in parallel by as many
// instance-function instances as the platform gives; the response then waits,
// lock-free, until every instance has converged or failed, up to UpdateWait.
// All converged: 200 as upstream. Some failed: 500 (UNKNOWN) naming them, and
// they keep their error in their record. Still running at the deadline: 504.
// Sending the identical request again is how a client waits for (or retries)
// an update: it re-sends events only for instances not yet converged, and is a
// fast no-op once everything is (digests and additional values unchanged).
func (m *Manager) UpdateChallenge(ctx context.Context, req *api.UpdateChallengeRequest) (_ *api.Challenge, err error) {
	defer func() { err = m.answer(ctx, opChallengeUpdate, err) }()
	if err := api.CheckUpdateMask(req.UpdateMask); err != nil {
		return nil, err
	}
	newTimeout, newUntil := req.Timeout, req.Until
	if !req.Masks("timeout") {
		newTimeout = nil
	}
	if !req.Masks("until") {
		newUntil = nil
	}
	if err := m.checkChallenge(req.MaskPaths(), req.Min, req.Max, newTimeout, newUntil); err != nil {
		return nil, err
	}
	if req.Masks("additional") {
		if err := m.o.Limits.CheckAdditional("additional", req.Additional); err != nil {
			return nil, err
		}
	}
	strategy, err := strategyOf(req.Strategy())
	if err != nil {
		return nil, err
	}
	if err := api.ValidateID("id", req.ID); err != nil {
		return nil, err
	}
	ctx = telemetry.WithChallenge(ctx, req.ID)
	reqCtx := ctx

	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: req.ID, ChallengeMode: lock.Write})
	if err != nil {
		return nil, err
	}
	defer held.Release(ctx)
	c, err := m.o.Records.GetChallenge(ctx, req.ID)
	if errors.Is(err, store.ErrNotFound) || err == nil && c.Deleting {
		return nil, apierr.ChallengeNotFound(req.ID)
	}
	if err != nil {
		return nil, err
	}

	newRef := ""
	if req.Masks("scenario") {
		if req.Scenario != nil {
			newRef = *req.Scenario
		}
		digest, err := m.o.Scenarios.Resolve(ctx, newRef)
		if err != nil {
			return nil, err
		}
		if digest == c.Digest {
			newRef = "" // same content: keep the stored reference (upstream)
		}
	}
	changedAdditional := applyMask(c, req)
	if newRef != "" {
		sc, err := m.o.Scenarios.Register(ctx, newRef, c.Additional)
		if err != nil {
			return nil, err
		}
		c.Scenario, c.Digest, c.Project = newRef, sc.Digest, sc.Program.Project
	}
	nextGeneration(c, newRef != "" || changedAdditional, strategy)

	claimed, pooled, err := m.o.Records.Instances(ctx, c.ID)
	if err != nil {
		return nil, err
	}
	if changedAdditional {
		// Every instance must still be deployable with its own values on top.
		for _, in := range claimed {
			if err := m.o.Limits.CheckAdditional("additional", c.Additional, in.Additional); err != nil {
				return nil, err
			}
		}
	}
	// Every claimed instance's until follows the challenge from now
	// (docs/contract.md §4.4 step 8): no instance record is written for it.
	plan := planUpdate(c, claimed, pooled, m.now())
	if err := m.o.Records.Under(held).UpdateChallenge(ctx, c, plan.withdrawn); err != nil {
		return nil, err
	}
	if plan.fill {
		m.requestPoolFill(ctx, c.ID)
	}
	var work []workItem
	for _, in := range plan.gone {
		work = append(work, deleteWork(c.ID, in.Identity, events.ReasonPoolShrink))
	}
	for _, in := range plan.updating {
		work = append(work, updateWork(c.ID, in.Identity))
	}
	// The instance work takes the challenge lock in reader mode: let go first.
	if err := held.Release(ctx); err != nil {
		m.log.WarnContext(ctx, "releasing challenge lock", "error", err)
	}
	m.dispatch(ctx, work)
	// Waiting is the client's business: it ends when the client leaves.
	if err := m.awaitConvergence(reqCtx, c.ID, c.Round, plan.gone, plan.updating); err != nil {
		return nil, err
	}
	out, err := m.RetrieveChallenge(reqCtx, c.ID)
	if err != nil {
		return nil, err
	}
	return out, nil
}
