package manager

import (
	"slices"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/store"
)

var (
	now  = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	hour = time.Hour
)

func claimedAt(id, sid string, gen int64, renewed time.Time) *store.Instance {
	return &store.Instance{ChallengeID: "c", Identity: id, SourceID: sid, Generation: gen, LastRenew: renewed}
}

func pooledAt(id string, gen int64, draining bool) *store.Instance {
	return &store.Instance{ChallengeID: "c", Identity: id, Generation: gen, Draining: draining}
}

func ids(ins []*store.Instance) []string {
	var out []string
	for _, in := range ins {
		out = append(out, in.Identity)
	}
	return out
}

func TestApplyMask(t *testing.T) {
	until := now.Add(hour)
	for _, tc := range []struct {
		name    string
		paths   []string
		req     api.UpdateChallengeRequest
		want    store.Challenge
		changed bool
	}{
		{"no mask applies nothing", nil, api.UpdateChallengeRequest{Min: 5}, store.Challenge{Min: 1, Max: 4, Additional: map[string]string{"k": "v"}}, false},
		{"min and max", []string{"min", "max"}, api.UpdateChallengeRequest{Min: 2, Max: 9}, store.Challenge{Min: 2, Max: 9, Additional: map[string]string{"k": "v"}}, false},
		{"masked and absent resets", []string{"timeout", "additional"}, api.UpdateChallengeRequest{}, store.Challenge{Min: 1, Max: 4}, true},
		{"same additional is no change", []string{"additional"}, api.UpdateChallengeRequest{Additional: map[string]string{"k": "v"}}, store.Challenge{Min: 1, Max: 4, Additional: map[string]string{"k": "v"}}, false},
		{"until", []string{"until"}, api.UpdateChallengeRequest{Until: &until}, store.Challenge{Min: 1, Max: 4, Until: &until, Additional: map[string]string{"k": "v"}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := store.Challenge{Min: 1, Max: 4, Timeout: &hour, Additional: map[string]string{"k": "v"}}
			if tc.paths != nil {
				tc.req.UpdateMask = &api.FieldMask{Paths: tc.paths}
			}
			if tc.want.Timeout == nil && !slices.Contains(tc.paths, "timeout") {
				tc.want.Timeout = &hour
			}
			changed := applyMask(&c, &tc.req)
			if changed != tc.changed || c.Min != tc.want.Min || c.Max != tc.want.Max || (c.Timeout == nil) != (tc.want.Timeout == nil) ||
				(c.Until == nil) != (tc.want.Until == nil) || len(c.Additional) != len(tc.want.Additional) {
				t.Fatalf("got %+v changed %v, want %+v changed %v", c, changed, tc.want, tc.changed)
			}
		})
	}
}

func TestNextGeneration(t *testing.T) {
	c := store.Challenge{Generation: 3, Strategy: "blue_green"}
	nextGeneration(&c, false, iac.UpdateInPlace)
	if c.Generation != 3 || c.Strategy != "blue_green" {
		t.Fatalf("an update that changes nothing instances follow moved the generation or its strategy: %+v", c)
	}
	nextGeneration(&c, true, iac.Recreate)
	if c.Generation != 4 || c.Strategy != "recreate" {
		t.Fatalf("a change: %+v", c)
	}
}

func TestPlanUpdate(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		c                         store.Challenge
		claimed, pooled           []*store.Instance
		updating, withdrawn, gone []string
		fill                      bool
		round                     int64
	}{
		{"nothing to do", store.Challenge{Generation: 1, Min: 1},
			[]*store.Instance{claimedAt("a", "s", 1, now)}, []*store.Instance{pooledAt("p", 1, false)}, nil, nil, nil, false, 0},
		{"new generation: claimed updated, pooled replaced", store.Challenge{Generation: 2, Min: 1},
			[]*store.Instance{claimedAt("a", "s", 1, now), claimedAt("b", "t", 2, now)}, []*store.Instance{pooledAt("p", 1, false)},
			[]string{"a"}, []string{"p"}, []string{"p"}, true, 1},
		{"draining ones are not counted nor withdrawn again", store.Challenge{Generation: 1, Min: 1},
			nil, []*store.Instance{pooledAt("p", 1, true), pooledAt("q", 1, false)}, nil, nil, nil, false, 0},
		{"shrink takes the highest identities", store.Challenge{Generation: 1, Min: 1},
			nil, []*store.Instance{pooledAt("a1", 1, false), pooledAt("c3", 1, false), pooledAt("b2", 1, false)}, nil, nil, []string{"c3", "b2"}, false, 1},
		{"max reached: no fill", store.Challenge{Generation: 1, Min: 2, Max: 2},
			[]*store.Instance{claimedAt("a", "s", 1, now), claimedAt("b", "t", 1, now)}, nil, nil, nil, nil, false, 0},
		{"expired challenge: no fill", store.Challenge{Generation: 1, Min: 2, Until: ptrTime(now.Add(-hour))},
			nil, nil, nil, nil, nil, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			var draining []bool
			for _, in := range tc.pooled {
				draining = append(draining, in.Draining)
			}
			p := planUpdate(&c, tc.claimed, tc.pooled, now)
			if !slices.Equal(ids(p.updating), tc.updating) || !slices.Equal(ids(p.withdrawn), tc.withdrawn) ||
				!slices.Equal(ids(p.gone), tc.gone) || p.fill != tc.fill || c.Round != tc.round || !c.UpdatedAt.Equal(now) {
				t.Fatalf("plan updating %v withdrawn %v gone %v fill %v round %d", ids(p.updating), ids(p.withdrawn), ids(p.gone), p.fill, c.Round)
			}
			for _, in := range p.withdrawn {
				if !in.Draining {
					t.Fatalf("withdrawn %s not draining", in.Identity)
				}
			}
			for i, in := range tc.pooled {
				if in.Draining != draining[i] {
					t.Fatal("the plan changed the records it was given")
				}
			}
		})
	}
}

func TestPlanJanitor(t *testing.T) {
	snap := func(c store.Challenge, claimed, pooled []*store.Instance) *store.Snapshot {
		c.ID = "c"
		return &store.Snapshot{Challenge: &c, Claimed: claimed, Pooled: pooled}
	}
	type want struct {
		deletes []string // identity:reason
		fills   int
		finish  []string
	}
	for _, tc := range []struct {
		name     string
		view     *store.Snapshot
		reserved int64
		want     want
	}{
		{"expired claimed instance", snap(store.Challenge{Timeout: &hour}, []*store.Instance{claimedAt("old", "s", 0, now.Add(-2*hour)), claimedAt("new", "t", 0, now)}, nil),
			0, want{deletes: []string{"old:expired"}}},
		{"a challenge update restarts the timers", snap(store.Challenge{Timeout: &hour, UpdatedAt: now.Add(-time.Minute)}, []*store.Instance{claimedAt("old", "s", 0, now.Add(-2*hour))}, nil),
			0, want{}},
		{"pool below min: one fill", snap(store.Challenge{Min: 3}, nil, []*store.Instance{pooledAt("p", 0, false)}), 0, want{fills: 1}},
		{"spin-ups in flight count", snap(store.Challenge{Min: 3}, nil, []*store.Instance{pooledAt("p", 0, false)}), 2, want{}},
		{"huge min: still one fill", snap(store.Challenge{Min: 1 << 62}, nil, nil), 0, want{fills: 1}},
		{"draining pooled: destroyed again, not counted", snap(store.Challenge{Min: 1}, nil, []*store.Instance{pooledAt("d", 0, true)}), 0,
			want{deletes: []string{"d:pool-shrink"}, fills: 1}},
		{"surplus: the highest go", snap(store.Challenge{Min: 1}, nil, []*store.Instance{pooledAt("a", 0, false), pooledAt("b", 0, false)}), 0,
			want{deletes: []string{"b:pool-shrink"}}},
		{"expired challenge: no pool work", snap(store.Challenge{Min: 2, Until: ptrTime(now.Add(-hour))}, nil, nil), 0, want{}},
		{"deleting: resumed", snap(store.Challenge{Deleting: true, Min: 2}, []*store.Instance{claimedAt("a", "s", 0, now)}, []*store.Instance{pooledAt("p", 0, false)}), 0,
			want{deletes: []string{"a:challenge-delete", "p:challenge-delete"}}},
		{"deleting and empty: finished", snap(store.Challenge{Deleting: true}, nil, nil), 0, want{finish: []string{"c"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := planJanitor(now, []*store.Snapshot{tc.view}, map[string]int64{"c": tc.reserved})
			var deletes []string
			fills := 0
			for _, w := range p.work {
				switch d := w.data.(type) {
				case events.InstanceDelete:
					deletes = append(deletes, d.Identity+":"+string(d.Reason))
				case events.PoolFill:
					fills++
				}
			}
			if !slices.Equal(deletes, tc.want.deletes) || fills != tc.want.fills || !slices.Equal(p.finish, tc.want.finish) {
				t.Fatalf("deletes %v fills %d finish %v, want %+v", deletes, fills, p.finish, tc.want)
			}
		})
	}
}

func TestCheckRenew(t *testing.T) {
	for _, tc := range []struct {
		name   string
		c      store.Challenge
		in     *store.Instance
		reason string
	}{
		{"renewable", store.Challenge{Timeout: &hour}, claimedAt("a", "s", 0, now.Add(-time.Minute)), ""},
		{"no timeout", store.Challenge{}, claimedAt("a", "s", 0, now), apierr.ReasonChallengeNoRenewal},
		{"expired", store.Challenge{Timeout: &hour}, claimedAt("a", "s", 0, now.Add(-2*hour)), apierr.ReasonInstanceExpired},
		{"the challenge's until passed", store.Challenge{Timeout: &hour, Until: ptrTime(now.Add(-time.Second))}, claimedAt("a", "s", 0, now), apierr.ReasonInstanceExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkRenew(&tc.c, tc.in, now)
			if got := apierr.From(err); (tc.reason == "") != (err == nil) || err != nil && got.Reason() != tc.reason {
				t.Fatalf("checkRenew = %v, want %q", err, tc.reason)
			}
		})
	}
}

func TestStillWanted(t *testing.T) {
	c := &store.Challenge{Timeout: &hour}
	expired, fresh := claimedAt("a", "s", 0, now.Add(-2*hour)), claimedAt("b", "t", 0, now)
	pooled := pooledAt("p", 0, false)
	for _, tc := range []struct {
		reason events.DeleteReason
		c      *store.Challenge
		in     *store.Instance
		want   bool
	}{
		{events.ReasonExpired, c, expired, true},
		{events.ReasonExpired, c, fresh, false}, // renewed since
		{events.ReasonExpired, nil, expired, false},
		{events.ReasonPoolShrink, c, pooled, true},
		{events.ReasonPoolShrink, c, fresh, false}, // claimed since
		{events.ReasonChallengeDelete, c, fresh, true},
		{events.ReasonRepair, c, fresh, true},
		{"", c, fresh, true},
	} {
		if got := stillWanted(tc.reason, tc.c, tc.in, now); got != tc.want {
			t.Errorf("stillWanted(%q, %s) = %v, want %v", tc.reason, tc.in.Identity, got, tc.want)
		}
	}
}

func ptrTime(t time.Time) *time.Time { return &t }
