// Package expiry holds the expiration arithmetic of instances (docs/contract.md §4.12).
package expiry

import "time"

// Until computes when an instance expires if it is (re)started at now, for a
// challenge with the given until and timeout, either of which may be unset:
// neither → never (nil); only timeout → now+timeout; only until → until; both →
// the earlier of the two. It is applied on create, pool claim, pool fill, renew
// and for every claimed instance on each challenge update.
func Until(now time.Time, until *time.Time, timeout *time.Duration) *time.Time {
	switch {
	case until == nil && timeout == nil:
		return nil
	case timeout == nil:
		u := *until
		return &u
	}
	t := now.Add(*timeout)
	if until != nil && until.Before(t) {
		t = *until
	}
	return &t
}

// Instance is when a claimed instance expires: Until counted from its last
// renewal, or from the challenge's last update when that is later (an update
// resets the until of every instance, docs/contract.md §4.4).
func Instance(lastRenew, challengeUpdated time.Time, until *time.Time, timeout *time.Duration) *time.Time {
	if challengeUpdated.After(lastRenew) {
		lastRenew = challengeUpdated
	}
	return Until(lastRenew, until, timeout)
}

// Expired reports whether a deadline has passed at now. An unset deadline never
// passes.
func Expired(now time.Time, until *time.Time) bool {
	return until != nil && now.After(*until)
}
