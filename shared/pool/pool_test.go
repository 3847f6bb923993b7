package pool

import "testing"

// The cases of upstream's Test_U_Delta (docs/contract.md §11.1).
func TestNewDelta(t *testing.T) {
	for _, tc := range []struct {
		name                      string
		min, max, claimed, pooled int64
		want                      Delta
	}{
		{"min-decrease", 1, 0, 0, 3, Delta{Delete: 2}},
		{"min-increase", 3, 0, 0, 1, Delta{Create: 2}},
		{"max-increase", 2, 6, 1, 2, Delta{}},
		{"max-increase-new-room", 2, 6, 2, 1, Delta{Create: 1}},
		{"max-decrease", 2, 2, 1, 2, Delta{Delete: 1}},
		{"max-decrease-enough-room", 2, 4, 1, 2, Delta{}},
		{"pool-empty-until", 2, 4, 0, 0, Delta{Create: 2}},
		{"max-below-claimed", 2, 1, 3, 1, Delta{Delete: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NewDelta(tc.min, tc.max, tc.claimed, tc.pooled); got != tc.want {
				t.Fatalf("NewDelta(%d,%d,%d,%d) = %+v, want %+v", tc.min, tc.max, tc.claimed, tc.pooled, got, tc.want)
			}
		})
	}
}

func TestRefill(t *testing.T) {
	for _, tc := range []struct {
		name                    string
		min, max, pooled, total int64
		afterClaim, afterDelete bool
	}{
		{"no min", 0, 0, 1, 1, false, false},
		{"pool below min, no max", 2, 0, 2, 3, true, false},
		{"pool below min, at max", 2, 3, 2, 3, false, false},
		{"pool below min, room left", 2, 4, 1, 3, true, true},
		{"pool full", 1, 0, 3, 3, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RefillAfterClaim(tc.min, tc.max, tc.pooled, tc.total); got != tc.afterClaim {
				t.Errorf("RefillAfterClaim = %v, want %v", got, tc.afterClaim)
			}
			if got := RefillAfterDelete(tc.min, tc.max, tc.pooled, tc.total); got != tc.afterDelete {
				t.Errorf("RefillAfterDelete = %v, want %v", got, tc.afterDelete)
			}
		})
	}
}
