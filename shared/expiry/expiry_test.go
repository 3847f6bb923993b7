package expiry

import (
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ptrT := func(t time.Time) *time.Time { return &t }
	ptrD := func(d time.Duration) *time.Duration { return &d }
	for _, tc := range []struct {
		name    string
		until   *time.Time
		timeout *time.Duration
		want    *time.Time
	}{
		{"neither", nil, nil, nil},
		{"timeout only", nil, ptrD(10 * time.Minute), ptrT(now.Add(10 * time.Minute))},
		{"until only", ptrT(now.Add(time.Hour)), nil, ptrT(now.Add(time.Hour))},
		{"until earlier", ptrT(now.Add(time.Minute)), ptrD(time.Hour), ptrT(now.Add(time.Minute))},
		{"timeout earlier", ptrT(now.Add(time.Hour)), ptrD(time.Minute), ptrT(now.Add(time.Minute))},
		{"until in the past", ptrT(now.Add(-time.Hour)), ptrD(time.Minute), ptrT(now.Add(-time.Hour))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Until(now, tc.until, tc.timeout)
			if (got == nil) != (tc.want == nil) || got != nil && !got.Equal(*tc.want) {
				t.Fatalf("Until = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestUntilDoesNotAlias(t *testing.T) {
	u := time.Now()
	got := Until(time.Now(), &u, nil)
	*got = got.Add(time.Hour)
	if !u.Before(*got) {
		t.Fatal("Until returned the caller's pointer")
	}
}

func TestExpired(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-time.Second), now.Add(time.Second)
	if Expired(now, nil) || Expired(now, &future) || !Expired(now, &past) {
		t.Fatal("Expired is wrong")
	}
}
