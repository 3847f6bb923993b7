// Package pool holds the sizing rules of the instance pool (docs/contract.md §4.11):
// how many pre-deployed instances a challenge keeps ready for players.
//
// min is the number of pooled (unclaimed) instances wanted; max, when not 0,
// caps the total (claimed + pooled) number of instances of the challenge.
package pool

// Delta is what to do to reach the wanted pool size.
type Delta struct {
	Create int64
	Delete int64
}

// NewDelta computes the pool change after a challenge update, given the new
// bounds and the current numbers of claimed and pooled instances.
func NewDelta(min, max, claimed, pooled int64) Delta {
	desired := min
	if max != 0 {
		room := max - claimed
		if room < 0 {
			room = 0
		}
		if room < desired {
			desired = room
		}
	}
	switch {
	case desired > pooled:
		return Delta{Create: desired - pooled}
	case pooled > desired:
		return Delta{Delete: pooled - desired}
	}
	return Delta{}
}

// RefillAfterClaim reports whether a claim that takes one of pooled instances
// (total instances of the challenge before the claim) should start a new
// pooled instance.
func RefillAfterClaim(min, max, pooled, total int64) bool {
	return pooled-1 < min && (max == 0 || total < max)
}

// RefillAfterDelete reports whether deleting a claimed instance (total
// instances before the deletion, pooled of them unclaimed) should start a new
// pooled instance.
func RefillAfterDelete(min, max, pooled, total int64) bool {
	return pooled < min && (max == 0 || total-1 < max)
}
