package manager

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

// StackLister lists the stacks of the Pulumi backend (shared/iac); the janitor
// needs it to find stacks that no record knows.
type StackLister interface {
	ListStacks(ctx context.Context) ([]iac.StackRef, error)
}

// LockSweeper is what a StackLister may also do: delete the stale locks of
// stacks that do not exist (iac.Engine.SweepLocks), left by engines killed
// during `stack init` or `stack rm`.
type LockSweeper interface {
	SweepLocks(ctx context.Context, stacks []iac.StackRef) (int, error)
}

// JanitorReport is what one janitor run did.
type JanitorReport struct {
	// Skipped: another janitor run held the singleton lock.
	Skipped bool
	// Expired instances whose deletion was requested.
	Expired int
	// PoolFills: challenges whose pool fill was requested (one event each);
	// PoolShrinks: pooled instances whose deletion was requested.
	PoolFills, PoolShrinks int
	// Resumed deletions of deleting challenges, and the challenges finished.
	Resumed, Finished int
	// Orphans: stacks without record destroyed; Repaired: records without
	// stack whose removal was requested; Suspects: either, seen for the first
	// time, repaired at a later run if still so.
	Orphans, Repaired, Suspects int
	// StaleLocks: engine lock files of stacks that do not exist, deleted.
	StaleLocks int
	// Failures of individual steps (logged).
	Failures int
}

const janitorLock = "janitor"

// DefaultOrphanGrace is how long a stack without record must stay unknown
// before the janitor destroys it: longer than any create or preview, so a
// stack being deployed right now is never taken for a leak.
const DefaultOrphanGrace = 10 * time.Minute

// Janitor runs one sweep (docs/contract.md §5, redesigned for serverless): it asks for
// the deletion of every claimed instance whose until has passed (one event
// each, found through the expiry index), brings every pool to its bounds,
// resumes interrupted challenge deletions, and destroys stacks no record
// knows (leaks of crashed creates), after they stayed unknown for a grace
// period. Only one run works at a time: a concurrent run returns at once with
// Skipped set.
func (m *Manager) Janitor(ctx context.Context, stacks StackLister, orphanGrace time.Duration) (rep JanitorReport, err error) {
	ctx, span := telemetry.Start(ctx, "janitor.run")
	defer span.End()
	defer func() { err = m.answer(ctx, opJanitor, err) }()
	defer func() {
		telemetry.Metrics().RecordJanitorRun(ctx, telemetry.JanitorRun{Deleted: rep.Expired, Failures: rep.Failures, Err: err})
	}()
	held, err := m.o.Locks.TryLock(ctx, janitorLock)
	if errors.Is(err, lock.ErrLocked) {
		m.log.InfoContext(ctx, "another janitor run is in progress")
		return JanitorReport{Skipped: true}, nil
	}
	if err != nil {
		return rep, err
	}
	defer held.Release(ctx)
	if orphanGrace <= 0 {
		orphanGrace = DefaultOrphanGrace
	}
	now := m.now()

	// 1. Every challenge with its instances, from one snapshot, and the
	// spin-ups in flight: two etcd round trips whatever the number of
	// challenges (reads per challenge made a no-op run over 10 000
	// challenges take seconds).
	views, err := m.o.Records.AllChallenges(ctx)
	if err != nil {
		return rep, err
	}
	// Read after the snapshot: a spin-up committed in between is counted
	// neither pooled nor reserved, which costs at most a fill event that
	// the fill handler finds unneeded; never a missing fill.
	pending, err := m.o.Records.ListPending(ctx, "")
	if err != nil {
		return rep, err
	}
	reserved := map[string]int64{}
	for _, p := range pending {
		if p.SourceID == "" {
			reserved[p.ChallengeID]++
		}
	}
	plan := planJanitor(now, views, reserved)
	rep = plan.rep
	for _, id := range plan.finish {
		if err := m.o.Records.Under(nil).DeleteChallenge(ctx, id); err != nil {
			rep.Failures++
			m.log.ErrorContext(telemetry.WithChallenge(ctx, id), "finishing a challenge deletion failed", "error", err)
		} else {
			rep.Finished++
		}
	}
	work := plan.work
	m.dispatch(ctx, work)

	// 3. Stacks without records, records without stacks.
	if stacks != nil {
		if err := m.repairOrphans(ctx, stacks, views, now, orphanGrace, &rep); err != nil {
			rep.Failures++
			m.log.ErrorContext(ctx, "orphan repair failed", "error", err)
		}
	}
	m.log.InfoContext(ctx, "janitor run", "expired", rep.Expired, "pool_fills", rep.PoolFills,
		"pool_shrinks", rep.PoolShrinks, "orphans", rep.Orphans, "stale_locks", rep.StaleLocks, "failures", rep.Failures)
	return rep, nil
}

// orphanSuspects are the leaks seen at earlier runs, by first sighting:
// "<project>/<identity>" for a stack no record knows, "record/<challenge>/<identity>"
// for a record whose stack is not in the backend.
type orphanSuspects map[string]time.Time

// repairOrphans restores "a record exists exactly when its stack exists" for
// what the operations could not: stacks no record knows (a create killed
// between its `up` and its commit) are destroyed; records whose stack is gone
// (a destroy whose record removal was refused, its lock lost) are removed.
// Either must stay so for grace, across two runs, before it is repaired: a
// stack being created has no record yet, and a recreate has no stack for a
// moment.
func (m *Manager) repairOrphans(ctx context.Context, stacks StackLister, views []*store.Snapshot, now time.Time, grace time.Duration, rep *JanitorReport) error {
	refs, err := stacks.ListStacks(ctx)
	if err != nil {
		return err
	}
	deployed := make(map[string]bool, len(refs))
	for _, ref := range refs {
		deployed[ref.Identity] = true
	}
	known, err := m.o.Records.Identities(ctx)
	if err != nil {
		return err
	}
	prev := orphanSuspects{}
	if b, err := m.o.Records.GetMeta(ctx, "orphan-suspects"); err != nil {
		return err
	} else if b != nil {
		_ = json.Unmarshal(b, &prev)
	}
	next := orphanSuspects{}
	for _, ref := range refs {
		if known[ref.Identity] {
			continue
		}
		key := ref.Project + "/" + ref.Identity
		first, seen := prev[key]
		if !seen {
			next[key] = now
			rep.Suspects++
			continue
		}
		if now.Sub(first) < grace {
			next[key] = first
			continue
		}
		if err := m.destroyOrphan(ctx, ref); err != nil {
			rep.Failures++
			next[key] = first
			m.log.ErrorContext(telemetry.WithIdentity(ctx, ref.Identity), "destroying an orphan stack failed", "project", ref.Project, "identity", ref.Identity, "error", err)
			continue
		}
		rep.Orphans++
		m.log.InfoContext(ctx, "orphan stack destroyed", "project", ref.Project, "identity", ref.Identity)
	}
	var repairs []workItem
	for _, v := range views {
		for _, in := range append(slices.Clone(v.Claimed), v.Pooled...) {
			if deployed[in.Identity] {
				continue
			}
			key := "record/" + in.ChallengeID + "/" + in.Identity
			first, seen := prev[key]
			switch {
			case !seen:
				next[key] = now
				rep.Suspects++
			case now.Sub(first) < grace:
				next[key] = first
			default:
				// Removed under the instance's lock, unless someone is at
				// work on it (then it is seen again at the next run).
				repairs = append(repairs, deleteWork(in.ChallengeID, in.Identity, events.ReasonRepair))
				rep.Repaired++
				next[key] = first
			}
		}
	}
	m.dispatch(ctx, repairs)
	if sw, ok := stacks.(LockSweeper); ok {
		n, err := sw.SweepLocks(ctx, refs)
		rep.StaleLocks += n
		if err != nil {
			rep.Failures++
			m.log.ErrorContext(ctx, "sweeping stale engine locks failed", "error", err)
		}
	}
	b, _ := json.Marshal(next)
	return m.o.Records.PutMeta(ctx, "orphan-suspects", b)
}

// destroyOrphan destroys a stack no record knows, in a span of its own.
func (m *Manager) destroyOrphan(ctx context.Context, ref iac.StackRef) error {
	ctx, span := telemetry.Start(ctx, "janitor.orphan.destroy")
	defer span.End()
	ctx = telemetry.WithIdentity(ctx, ref.Identity)
	err := m.engineDestroy(ctx, opOrphan, ref.Project, ref.Identity)
	telemetry.RecordError(ctx, err)
	return err
}
