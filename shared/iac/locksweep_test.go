package iac

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSweepLocks plants lock files in the layout the engine writes next to
// a real stack and checks which ones the sweep deletes: only the old ones of
// stacks that do not exist.
func TestSweepLocks(t *testing.T) {
	e, backend := newTestEngine(t)
	e.cfg.OpTimeout = time.Second // stale after 11 s
	ctx := context.Background()
	p := scenario(t, "outputs")
	if _, err := e.Create(ctx, p, "live", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Destroy(context.Background(), p, "live") })

	root := filepath.Join(strings.TrimPrefix(backend, "file://"), ".pulumi", "locks")
	old := time.Now().Add(-time.Minute)
	plant := func(rel string, at time.Time) string {
		path := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		body := `{"pid":1,"username":"root","hostname":"vm","timestamp":"` + at.UTC().Format(time.RFC3339Nano) + `"}`
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	stale := []string{
		plant("organization/"+p.Project+"/gone/a.json", old),     // killed stack init
		plant("organization/other/gone/b.json", old),             // another project
		plant("gone-legacy/c.json", old),                         // legacy layout
		plant("organization/"+p.Project+"/live/x.json.tmp", old), // not a lock: a cut-short write
	}
	kept := []string{
		plant("organization/"+p.Project+"/live/d.json", old),            // a listed stack: breakStaleLocks' business
		plant("organization/"+p.Project+"/starting/e.json", time.Now()), // a stack init under way
	}
	n, err := e.SweepLocks(ctx, stacks(t, e))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("swept %d locks, want 3", n)
	}
	for _, f := range stale[:3] {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v)", f, err)
		}
	}
	for _, f := range append(kept, stale[3]) {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if !slices.Contains(stacks(t, e), StackRef{Project: p.Project, Identity: "live"}) {
		t.Error("the live stack is gone")
	}
	// The live stack's lock is real to the engine; remove it so that the
	// cleanup's destroy can run.
	_ = os.Remove(kept[0])
}

func TestLockOwner(t *testing.T) {
	for _, tc := range []struct {
		key, project, stack string
		ok                  bool
	}{
		{".pulumi/locks/organization/p/s/id.json", "p", "s", true},
		{".pulumi/locks/s/id.json", "", "s", true},
		{".pulumi/locks/id.json", "", "", false},
		{".pulumi/locks/a/b/c/d/id.json", "", "", false},
	} {
		p, s, ok := lockOwner(tc.key)
		if p != tc.project || s != tc.stack || ok != tc.ok {
			t.Errorf("lockOwner(%q) = %q, %q, %v; want %q, %q, %v", tc.key, p, s, ok, tc.project, tc.stack, tc.ok)
		}
	}
}
