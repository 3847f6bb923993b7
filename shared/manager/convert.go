package manager

import (
	"maps"
	"time"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/store"
)

// toAPIChallenge renders a challenge and its claimed instances.
func toAPIChallenge(c *store.Challenge, claimed []*store.Instance) *api.Challenge {
	out := &api.Challenge{
		ID:         c.ID,
		Scenario:   c.Scenario,
		Timeout:    c.Timeout,
		Until:      c.Until,
		Additional: maps.Clone(c.Additional),
		Min:        c.Min,
		Max:        c.Max,
		Instances:  make([]*api.Instance, 0, len(claimed)),
	}
	for _, in := range claimed {
		out.Instances = append(out.Instances, toAPIInstance(c, in))
	}
	return out
}

// toAPIInstance renders a claimed instance of c; its additional is the
// instance's own map, never the merge with the challenge's (docs/contract.md §4.15).
func toAPIInstance(c *store.Challenge, in *store.Instance) *api.Instance {
	return &api.Instance{
		ChallengeID:    in.ChallengeID,
		SourceID:       in.SourceID,
		Since:          in.Since,
		LastRenew:      in.LastRenew,
		Until:          untilOf(c, in),
		ConnectionInfo: in.ConnectionInfo,
		Flags:          append([]string(nil), in.Flags...),
		Additional:     maps.Clone(in.Additional),
	}
}

// merge is the configuration a scenario gets: the challenge's map overlaid by
// the instance's (docs/contract.md §4.15).
func merge(challenge, instance map[string]string) map[string]string {
	out := make(map[string]string, len(challenge)+len(instance))
	maps.Copy(out, challenge)
	maps.Copy(out, instance)
	return out
}

// untilOf is when a claimed instance of c expires (expiry.Instance). Derived,
// never stored: a challenge update changes no instance record.
func untilOf(c *store.Challenge, in *store.Instance) *time.Time {
	return expiry.Instance(in.LastRenew, c.UpdatedAt, c.Until, c.Timeout)
}
