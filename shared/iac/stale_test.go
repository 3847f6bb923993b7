package iac

import (
	"strings"
	"testing"
	"time"
)

func TestStaleLocks(t *testing.T) {
	now := time.Date(2026, 11, 23, 22, 30, 0, 0, time.UTC)
	locked := func(ats ...string) string {
		s := "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file with `pulumi cancel`."
		for _, at := range ats {
			s += "\n  file:///s/.pulumi/locks/organization/p/x/u.json?no_tmp_dir=true: created by root@vm (pid 9234) at " + at
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		stderr string
		want   bool
	}{
		{"old lock", locked("2026-11-23T22:20:00Z"), true},
		{"young lock", locked("2026-11-23T22:29:55Z"), false},
		{"one young among old", locked("2026-11-23T22:20:00Z", "2026-11-23T22:29:55Z"), false},
		{"all old", locked("2026-11-23T22:20:00Z", "2026-11-23T22:21:00Z"), true},
		{"unparsable time", locked("yesterday"), false},
		{"no lock details", locked(), false},
		{"another failure", "error: no stack named 'x' found", false},
		{"user@host with spaces", "the stack is currently locked by 1 lock(s).\n  f: created by a b@c d (pid 1) at 2026-11-23T22:00:00Z", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := staleLocks(tc.stderr, time.Minute, now); got != tc.want {
				t.Fatalf("staleLocks = %v, want %v", got, tc.want)
			}
			// Exclusive callers (staleAfter 0) break any lock, whatever its time.
			want := strings.Contains(tc.stderr, "currently locked")
			if got := staleLocks(tc.stderr, 0, now); got != want {
				t.Fatalf("exclusive staleLocks = %v, want %v", got, want)
			}
		})
	}
}
