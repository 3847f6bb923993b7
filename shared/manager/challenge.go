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
