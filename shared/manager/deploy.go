package manager

import (
	"context"
	"errors"
	"fmt"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

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
