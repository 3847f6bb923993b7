package manager

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

// CreateChallenge registers a challenge (docs/contract.md §4.1): pooler bounds, then
// existence (409 before any registry work), then the scenario is resolved,
// compiled once and previewed, then saved. The pool is filled by events; the
// response does not wait for it.
func (m *Manager) CreateChallenge(ctx context.Context, req *api.CreateChallengeRequest) (_ *api.Challenge, err error) {
	defer func() { err = m.answer(ctx, opChallengeCreate, err) }()
	if err := api.ValidateID("id", req.ID); err != nil {
		return nil, err
	}
	if err := m.checkChallenge(api.CreatePoolerPaths, req.Min, req.Max, req.Timeout, req.Until); err != nil {
		return nil, err
	}
	if err := m.o.Limits.CheckAdditional("additional", req.Additional); err != nil {
		return nil, err
	}
	ctx = telemetry.WithChallenge(ctx, req.ID)
	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: req.ID, ChallengeMode: lock.Write})
	if err != nil {
		return nil, err
	}
	defer held.Release(ctx)

	switch _, err := m.o.Records.GetChallenge(ctx, req.ID); {
	case err == nil:
		return nil, apierr.ChallengeAlreadyExists(req.ID)
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	sc, err := m.o.Scenarios.Register(ctx, req.Scenario, req.Additional)
	if err != nil {
		return nil, err
	}
	c := &store.Challenge{
		ID:         req.ID,
		Scenario:   req.Scenario,
		Digest:     sc.Digest,
		Project:    sc.Program.Project,
		Timeout:    req.Timeout,
		Until:      req.Until,
		Additional: req.Additional,
		Min:        req.Min,
		Max:        req.Max,
	}
	if err := m.o.Records.Under(held).CreateChallenge(ctx, c); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, apierr.ChallengeAlreadyExists(req.ID)
		}
		return nil, err
	}
	m.log.InfoContext(ctx, "challenge created", "scenario", c.Scenario, "digest", c.Digest)
	if c.Min > 0 && !expiry.Expired(m.now(), c.Until) {
		m.requestPoolFill(ctx, c.ID)
	}
	return toAPIChallenge(c, nil), nil
}

// RetrieveChallenge returns a challenge with its claimed instances, read in
// one etcd revision. Reads take no lock: etcd's snapshot is the consistency
// upstream needed its reader locks for, and a read never waits behind a
// deployment.
func (m *Manager) RetrieveChallenge(ctx context.Context, id string) (_ *api.Challenge, err error) {
	defer func() { err = m.answer(ctx, opChallengeRetrieve, err) }()
	if err := api.ValidateID("id", id); err != nil {
		return nil, err
	}
	ctx = telemetry.WithChallenge(ctx, id)
	c, claimed, err := m.o.Records.ChallengeWithInstances(ctx, id)
	if errors.Is(err, store.ErrNotFound) || err == nil && c.Deleting {
		return nil, apierr.ChallengeNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	return toAPIChallenge(c, claimed), nil
}

// QueryChallenges streams every challenge with its claimed instances, all read
// in one etcd revision (a consistent snapshot, like upstream's stop-the-world
// lock, without stopping the world).
func (m *Manager) QueryChallenges(ctx context.Context, send func(*api.Challenge) error) error {
	views, err := m.o.Records.AllChallenges(ctx)
	if err != nil {
		return m.answer(ctx, opChallengeQuery, err)
	}
	for _, v := range views {
		if v.Challenge.Deleting {
			continue
		}
		if err := send(toAPIChallenge(v.Challenge, v.Claimed)); err != nil {
			return err
		}
	}
	return nil
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

// DeleteChallenge destroys every instance of a challenge (claimed and pooled)
// from its stored state, then forgets the challenge (docs/contract.md §4.5, without
// upstream's bugs: stacks are destroyed with the project and identity they
// were deployed with, and a record is only removed once its stack is gone).
// The challenge is hidden at once (404 for every other call); destructions
// are fanned out as events and awaited like updates. A failed or unfinished
// deletion keeps what is left: sending the DELETE again resumes it.
func (m *Manager) DeleteChallenge(ctx context.Context, id string) (err error) {
	defer func() { err = m.answer(ctx, opChallengeDelete, err) }()
	if err := api.ValidateID("id", id); err != nil {
		return err
	}
	ctx = telemetry.WithChallenge(ctx, id)
	reqCtx := ctx
	ctx, held, err := m.acquire(ctx, lock.Chain{Challenge: id, ChallengeMode: lock.Write})
	if err != nil {
		return err
	}
	defer held.Release(ctx)
	c, err := m.o.Records.GetChallenge(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return apierr.ChallengeNotFound(id)
	}
	if err != nil {
		return err
	}
	// A new round, also when the DELETE is sent again: what failed at an
	// earlier one is retried, not reported (awaitConvergence).
	c.Deleting = true
	c.Round++
	if err := m.o.Records.Under(held).UpdateChallenge(ctx, c, nil); err != nil {
		return err
	}
	// An update that was already running when the challenge was marked (its
	// challenge lock released early) may still rename an instance
	// (blue-green) after the listing: what is left is deleted in another round.
	for attempt := 1; ; attempt++ {
		claimed, pooled, err := m.o.Records.Instances(ctx, id)
		if err != nil {
			return err
		}
		all := append(claimed, pooled...)
		work := make([]workItem, 0, len(all))
		for _, in := range all {
			work = append(work, deleteWork(id, in.Identity, events.ReasonChallengeDelete))
		}
		if err := held.Release(ctx); err != nil {
			m.log.WarnContext(ctx, "releasing challenge lock", "error", err)
		}
		m.dispatch(ctx, work)
		if err := m.awaitConvergence(reqCtx, id, c.Round, all, nil); err != nil {
			return err
		}

		ctx, held, err = m.acquire(reqCtx, lock.Chain{Challenge: id, ChallengeMode: lock.Write})
		if err != nil {
			return err
		}
		defer held.Release(ctx)
		err = m.o.Records.Under(held).DeleteChallenge(ctx, id)
		switch {
		case err == nil:
			m.log.InfoContext(ctx, "challenge deleted", "instances", len(all), "rounds", attempt)
			return nil
		case errors.Is(err, store.ErrNotFound):
			return nil // a concurrent DELETE finished first
		case !errors.Is(err, store.ErrNotEmpty) || attempt == maxDeleteRounds:
			return err
		}
	}
}

// maxDeleteRounds bounds the listings of a challenge deletion: each one is
// caused by an update that was running when the deletion began.
const maxDeleteRounds = 4

// awaitConvergence waits until every instance of gone is deleted and every
// instance of updating reached the challenge's generation, or failed at update
// round round (or later).
func (m *Manager) awaitConvergence(ctx context.Context, challengeID string, round int64, gone, updating []*store.Instance) error {
	if len(gone) == 0 && len(updating) == 0 {
		return nil
	}
	ctx, span := telemetry.Start(ctx, "challenge.await")
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, m.o.UpdateWait)
	defer cancel()
	delay := 50 * time.Millisecond
	for {
		pending, failed, err := m.progress(ctx, challengeID, round, gone, updating)
		if err != nil && ctx.Err() == nil {
			return err
		}
		if err == nil && pending == 0 {
			if len(failed) > 0 {
				return apierr.Unknown(fmt.Sprintf("%d instance(s) could not be brought up to date: %s. Send the same request again to retry.",
					len(failed), strings.Join(failed, "; ")))
			}
			return nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return apierr.DeadlineExceeded().WithCause(fmt.Errorf("%d instance(s) still in progress", pending))
			}
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, time.Second)
	}
}

func (m *Manager) progress(ctx context.Context, challengeID string, round int64, gone, updating []*store.Instance) (pending int, failed []string, err error) {
	c, err := m.o.Records.GetChallenge(ctx, challengeID)
	if errors.Is(err, store.ErrNotFound) {
		// A concurrent DELETE finished: its instances are all gone, and
		// nothing is left to update.
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	claimed, pooled, err := m.o.Records.Instances(ctx, challengeID)
	if err != nil {
		return 0, nil, err
	}
	byIdentity := map[string]*store.Instance{}
	bySource := map[string]*store.Instance{}
	for _, in := range append(claimed, pooled...) {
		byIdentity[in.Identity] = in
		if in.SourceID != "" {
			bySource[in.SourceID] = in
		}
	}
	for _, in := range gone {
		if cur, ok := byIdentity[in.Identity]; ok {
			if cur.DeleteFailed && cur.FailedRound >= round {
				failed = append(failed, m.describe(cur))
				continue
			}
			pending++
		}
	}
	for _, in := range updating {
		// Blue-green changes the identity: follow claimed ones by source.
		cur := byIdentity[in.Identity]
		if cur == nil && in.SourceID != "" {
			cur = bySource[in.SourceID]
		}
		switch {
		case cur == nil: // deleted meanwhile: nothing to wait for
		case cur.Generation >= c.Generation:
		case cur.FailedGeneration >= c.Generation && cur.FailedRound >= round:
			failed = append(failed, m.describe(cur))
		default:
			pending++
		}
	}
	return pending, failed, nil
}

func (m *Manager) describe(in *store.Instance) string {
	who := "pooled instance " + in.Identity
	if in.SourceID != "" {
		who = "instance of source " + in.SourceID
	}
	return who + ": " + m.public(in.LastError)
}

// requestPoolFill asks for the pool of a challenge to be filled. One event, however
// many instances are missing: fills of one challenge run one at a time (the pool
// lock), and the fill that runs goes on until the pool is full (fillPool), so more
// events would only step aside. The work sent is thus bounded by what can run, never
// by min.
func (m *Manager) requestPoolFill(ctx context.Context, challengeID string) {
	m.dispatch(ctx, []workItem{fillWork(challengeID)})
}
