package manager

import (
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/pool"
	"github.com/challfn/challfn/shared/store"
)

// The business rules, as pure functions of records and time: what the
// operations (challenge.go, instance.go, janitor.go) decide, apart from the
// reading, locking and writing around it. Table-tested in rules_test.go.

// applyMask applies the masked fields of an update to c (docs/contract.md
// §3.5: a masked field absent from the body resets it), but the scenario,
// which needs a registry. It reports whether the additional values changed,
// which instances must follow.
func applyMask(c *store.Challenge, req *api.UpdateChallengeRequest) (additionalChanged bool) {
	if req.Masks("until") {
		c.Until = req.Until
	}
	if req.Masks("timeout") {
		c.Timeout = req.Timeout
	}
	if req.Masks("additional") {
		additionalChanged = !maps.Equal(c.Additional, req.Additional)
		c.Additional = req.Additional
	}
	if req.Masks("min") {
		c.Min = req.Min
	}
	if req.Masks("max") {
		c.Max = req.Max
	}
	return additionalChanged
}

// nextGeneration records a change instances must follow (a new scenario or
// new additional values): a new generation, to be reached with strategy. An
// update that changes neither keeps the strategy of the generation pending.
func nextGeneration(c *store.Challenge, changed bool, strategy iac.Strategy) {
	if changed {
		c.Generation++
		c.Strategy = string(strategy)
	}
}

// updatePlan is the instance work a challenge update causes.
type updatePlan struct {
	// updating: claimed instances behind the challenge's generation (new
	// changes, and earlier ones failed or still pending: a re-sent PATCH
	// retries them).
	updating []*store.Instance
	// withdrawn: pooled instances behind the generation, taken out of the
	// pool (Draining) in the challenge's transaction: pooled instances are
	// never updated, they are destroyed and the pool refills.
	withdrawn []*store.Instance
	// gone: every pooled instance to destroy (withdrawn and pool surplus).
	gone []*store.Instance
	// fill: the pool wants more.
	fill bool
}

// planUpdate decides the instance work of an update applied to c at now,
// and stamps c: UpdatedAt (every until counts from it, docs/contract.md
// §4.4) and a new Round when there is instance work (failures of an earlier
// round are retried, not reported).
func planUpdate(c *store.Challenge, claimed, pooled []*store.Instance, now time.Time) updatePlan {
	var p updatePlan
	c.UpdatedAt = now
	for _, in := range claimed {
		if in.Generation < c.Generation {
			p.updating = append(p.updating, in)
		}
	}
	var live []*store.Instance
	for _, in := range pooled {
		switch {
		case in.Draining: // on its way out already
		case in.Generation < c.Generation:
			out := *in
			out.Draining = true
			p.withdrawn = append(p.withdrawn, &out)
		default:
			live = append(live, in)
		}
	}
	delta := pool.NewDelta(c.Min, c.Max, int64(len(claimed)), int64(len(live)))
	p.gone = append(slices.Clone(p.withdrawn), surplus(live, delta.Delete)...)
	p.fill = delta.Create > 0 && !expiry.Expired(now, c.Until)
	if len(p.updating)+len(p.gone) > 0 {
		c.Round++
	}
	return p
}

// surplus is which n of the pooled instances a shrink destroys: the highest
// identities, since claims take the lowest.
func surplus(pooled []*store.Instance, n int64) []*store.Instance {
	s := slices.Clone(pooled)
	slices.SortFunc(s, func(a, b *store.Instance) int { return strings.Compare(b.Identity, a.Identity) })
	return s[:min(int(max(n, 0)), len(s))]
}

// janitorPlan is what one janitor run asks for.
type janitorPlan struct {
	work []workItem
	// finish: deleting challenges with no instance left, to forget.
	finish []string
	rep    JanitorReport
}

// planJanitor decides a janitor run from a snapshot of every challenge with
// its instances and the pool spin-ups in flight per challenge (reserved):
// deletions of expired claimed instances, one fill per pool that wants more
// (the fill runs until the pool is full), pool shrinks (withdrawn instances
// whose destruction failed included), and the resumption of interrupted
// challenge deletions.
func planJanitor(now time.Time, views []*store.Snapshot, reserved map[string]int64) janitorPlan {
	var p janitorPlan
	for _, v := range views {
		c := v.Challenge
		if c.Deleting {
			if len(v.Claimed)+len(v.Pooled) == 0 {
				p.finish = append(p.finish, c.ID)
				continue
			}
			for _, in := range append(slices.Clone(v.Claimed), v.Pooled...) {
				p.work = append(p.work, deleteWork(c.ID, in.Identity, events.ReasonChallengeDelete))
			}
			p.rep.Resumed++
			continue
		}
		for _, in := range v.Claimed {
			if expiry.Expired(now, untilOf(c, in)) {
				p.work = append(p.work, deleteWork(c.ID, in.Identity, events.ReasonExpired))
				p.rep.Expired++
			}
		}
		if expiry.Expired(now, c.Until) {
			continue // no pool work for an expired challenge
		}
		var live []*store.Instance
		for _, in := range v.Pooled {
			if in.Draining { // withdrawn, its destruction failed: again
				p.work = append(p.work, deleteWork(c.ID, in.Identity, events.ReasonPoolShrink))
				p.rep.PoolShrinks++
			} else {
				live = append(live, in)
			}
		}
		delta := pool.NewDelta(c.Min, c.Max, int64(len(v.Claimed)), int64(len(live))+reserved[c.ID])
		if delta.Create > 0 {
			p.work = append(p.work, fillWork(c.ID))
			p.rep.PoolFills++
		}
		for _, in := range surplus(live, delta.Delete) {
			p.work = append(p.work, deleteWork(c.ID, in.Identity, events.ReasonPoolShrink))
			p.rep.PoolShrinks++
		}
	}
	return p
}

// checkRenew is whether an instance of c may be renewed at now (docs/contract.md
// §4.9): its challenge must have a timeout, and the instance must not have
// expired.
func checkRenew(c *store.Challenge, in *store.Instance, now time.Time) error {
	if c.Timeout == nil {
		return apierr.ChallengeNoRenewal(c.ID)
	}
	if expiry.Expired(now, untilOf(c, in)) {
		return apierr.InstanceExpired(c.ID, in.SourceID)
	}
	return nil
}

// stillWanted is whether a deletion asked for reason still holds for in
// (its challenge c, nil when gone) at now: a renewal cancels an expiry, a
// claim a pool shrink.
func stillWanted(reason events.DeleteReason, c *store.Challenge, in *store.Instance, now time.Time) bool {
	switch reason {
	case events.ReasonExpired:
		return c != nil && expiry.Expired(now, untilOf(c, in))
	case events.ReasonPoolShrink:
		return in.Pooled()
	}
	return true
}
