package iac

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/sandbox"
)

const testPassphrase = "challfn-test-passphrase"

// newTestEngine returns an Engine on a fresh file:// backend.
func newTestEngine(t testing.TB) (*Engine, string) {
	t.Helper()
	backend := "file://" + t.TempDir()
	e, err := New(Config{PulumiBin: pulumiBin, BackendURL: backend, Passphrase: testPassphrase, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return e, backend
}

func scenario(t testing.TB, name string) Program {
	t.Helper()
	p, err := LoadProgram(filepath.Join(repoRoot, "scenarios", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stacks(t testing.TB, e *Engine) []StackRef {
	t.Helper()
	refs, err := e.ListStacks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return refs
}

func hasStack(t testing.TB, e *Engine, project, identity string) bool {
	return slices.Contains(stacks(t, e), StackRef{Project: project, Identity: identity})
}

func wantOutputs(t *testing.T, got Outputs, ci string, flags ...string) {
	t.Helper()
	if got.ConnectionInfo != ci || !slices.Equal(got.Flags, flags) {
		t.Fatalf("outputs = %+v, want connection_info %q flags %q", got, ci, flags)
	}
}

// TestLifecycle walks one instance through every operation on the real engine.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	p := scenario(t, "additional")
	id := "a0b1c2d3e4f5a6b7"

	outs, err := e.Create(ctx, p, id, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	wantOutputs(t, outs, id+"?k=v", "CTF{"+id+"}")
	if !hasStack(t, e, "additional", id) {
		t.Fatal("stack missing from the backend after create")
	}

	// In place: same identity, outputs follow the new additional.
	gotID, outs, err := e.Update(ctx, p, p, UpdateInPlace, id, map[string]string{"k": "w", "x": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != id {
		t.Fatalf("in-place update changed identity to %q", gotID)
	}
	wantOutputs(t, outs, id+"?k=w&x=1", "CTF{"+id+"}")

	// Blue-green: new identity, the old stack is gone from the backend.
	newID, outs, err := e.Update(ctx, p, p, BlueGreen, id, map[string]string{"k": "bg"})
	if err != nil {
		t.Fatal(err)
	}
	if newID == id || len(newID) != 16 {
		t.Fatalf("blue-green identity = %q (old %q)", newID, id)
	}
	wantOutputs(t, outs, newID+"?k=bg", "CTF{"+newID+"}")
	if hasStack(t, e, "additional", id) || !hasStack(t, e, "additional", newID) {
		t.Fatalf("after blue-green, stacks = %+v", stacks(t, e))
	}

	// Recreate: same identity, new deployment.
	gotID, outs, err = e.Update(ctx, p, p, Recreate, newID, map[string]string{"k": "re"})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != newID {
		t.Fatalf("recreate changed identity to %q", gotID)
	}
	wantOutputs(t, outs, newID+"?k=re", "CTF{"+newID+"}")

	if err := e.Destroy(ctx, p, newID); err != nil {
		t.Fatal(err)
	}
	if refs := stacks(t, e); len(refs) != 0 {
		t.Fatalf("stacks left after destroy: %+v", refs)
	}
	// Idempotent: destroying a missing stack succeeds.
	if err := e.Destroy(ctx, p, newID); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
}

func TestUnknownStrategy(t *testing.T) {
	e, _ := newTestEngine(t)
	p := Program{Dir: "/nonexistent", Project: "x"}
	if _, _, err := e.Update(context.Background(), p, p, Strategy("sideways"), "id", nil); !errors.Is(err, ErrUnknownStrategy) {
		t.Fatalf("err = %v, want ErrUnknownStrategy", err)
	}
}

// TestInPlaceAcrossProjects: stack names are per project, so an in-place update to a
// program of another project recreates the instance under the new project.
func TestInPlaceAcrossProjects(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	old, new := scenario(t, "outputs"), scenario(t, "additional")
	id := "1234567890123456" // all digits: must stay a string through the YAML config
	outs, err := e.Create(ctx, old, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOutputs(t, outs, "nc "+id+".outputs.local 1337", "CTF{"+id+"}", "CTF{second-"+id+"}")
	gotID, outs, err := e.Update(ctx, old, new, UpdateInPlace, id, map[string]string{"a": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != id {
		t.Fatalf("identity changed to %q", gotID)
	}
	wantOutputs(t, outs, id+"?a=b", "CTF{"+id+"}")
	if hasStack(t, e, "outputs", id) || !hasStack(t, e, "additional", id) {
		t.Fatalf("stacks = %+v", stacks(t, e))
	}
	if err := e.Destroy(ctx, new, id); err != nil {
		t.Fatal(err)
	}
}

func TestFailedCreateLeavesNoStack(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	for _, tc := range []struct {
		name, scenario string
		additional     map[string]string
		summary        string
	}{
		{"program error", "failing", nil, "this scenario fails on purpose"},
		{"error on request", "additional", map[string]string{"fail": "boom"}, "failing on request: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := scenario(t, tc.scenario)
			_, err := e.Create(ctx, p, "f00df00df00df00d", tc.additional)
			var oe *OpError
			if !errors.As(err, &oe) {
				t.Fatalf("err = %v, want *OpError", err)
			}
			if oe.Op != "create" || oe.Stack != StackName(p.Project, "f00df00df00df00d") {
				t.Fatalf("OpError = %+v", oe)
			}
			if !strings.Contains(oe.Summary, tc.summary) {
				t.Fatalf("summary %q does not carry the program's error %q", oe.Summary, tc.summary)
			}
			t.Logf("summary: %s", oe.Summary)
			if oe.Log == "" {
				t.Fatal("no engine log kept")
			}
			if refs := stacks(t, e); len(refs) != 0 {
				t.Fatalf("failed create left stacks: %+v", refs)
			}
		})
	}
}

func TestBadOutputsFailCreate(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	// The failing scenario's sibling without connection_info: the sdk scenario always
	// exports one, so build a program that exports nothing by reusing "failing"'s module.
	dir := t.TempDir()
	copyDir(t, filepath.Join(repoRoot, "scenarios", "outputs"), dir)
	src := `package main

import "github.com/pulumi/pulumi/sdk/v3/go/pulumi"

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		ctx.Export("flag", pulumi.Int(42))
		return nil
	})
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProgram(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Create(ctx, p, "badbadbadbadbad0", nil)
	if !errors.Is(err, ErrBadOutputs) {
		t.Fatalf("err = %v, want ErrBadOutputs", err)
	}
	if refs := stacks(t, e); len(refs) != 0 {
		t.Fatalf("bad outputs left stacks: %+v", refs)
	}
}

// TestSecondProcessDestroys: another OS process, with its own Engine on the same backend,
// destroys what this one created.
func TestSecondProcessDestroys(t *testing.T) {
	ctx := context.Background()
	e, backend := newTestEngine(t)
	p := scenario(t, "additional")
	id := "5ec0ndd5ec0ndd00"
	if _, err := e.Create(ctx, p, id, nil); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(),
		helperEnv+"=1",
		"IAC_TEST_PULUMI="+pulumiBin,
		"IAC_TEST_BACKEND="+backend,
		"IAC_TEST_PASSPHRASE="+testPassphrase,
		"IAC_TEST_PROJECT="+p.Project,
		"IAC_TEST_IDENTITY="+id,
	)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper process: %v\n%s", err, out)
	}
	if refs := stacks(t, e); len(refs) != 0 {
		t.Fatalf("stacks left after the other process destroyed: %+v", refs)
	}
}

// TestCallerCancelDoesNotAbortUp: the caller hangs up while the program runs; the
// deployment still completes (docs/design.md, decision 5).
func TestCallerCancelDoesNotAbortUp(t *testing.T) {
	e, _ := newTestEngine(t)
	p := scenario(t, "additional")
	id := "cafecafecafecafe"
	ctx, cancel := context.WithCancel(context.Background())
	type res struct {
		outs Outputs
		err  error
	}
	done := make(chan res, 1)
	go func() {
		outs, err := e.Create(ctx, p, id, map[string]string{"sleep": "3s"})
		done <- res{outs, err}
	}()
	time.Sleep(500 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("create returned before the cancel, test inconclusive: %+v", r)
	default:
	}
	cancel()
	r := <-done
	if r.err != nil {
		t.Fatalf("create after caller cancel: %v", r.err)
	}
	wantOutputs(t, r.outs, id+"?sleep=3s", "CTF{"+id+"}")
	if !hasStack(t, e, "additional", id) {
		t.Fatal("stack missing")
	}
	// A caller already gone before anything started gets its error and nothing runs.
	if _, err := e.Create(ctx, p, "0000000000000000", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("create with a done context: %v", err)
	}
	if err := e.Destroy(context.Background(), p, id); err != nil {
		t.Fatal(err)
	}
}

// TestSDKShapes runs every output shape a ChallMaker writes by default with
// chall-manager's SDK v0.6.6 (or plain pulumi.Run) through create, each update strategy
// and destroy on the real engine: each deploys with the flags chall-manager gives.
func TestSDKShapes(t *testing.T) {
	varied := func(plain string) func(string) bool {
		// sdk.Variate keeps the length and leaves braces alone.
		return func(f string) bool { return len(f) == len(plain) && strings.HasSuffix(f, "}") && f != "" }
	}
	exact := func(want string) func(string) bool { return func(f string) bool { return f == want } }
	for _, tc := range []struct {
		scenario string
		ci       func(id string) string
		flags    []func(string) bool
	}{
		{"sdk-default", func(id string) string { return "curl -v https://" + id + ".sdk-default.local" }, nil},
		{"sdk-flag", func(id string) string { return "nc " + id + ".sdk-flag.local 1337" }, []func(string) bool{varied("CTF{deprecated-flag}")}},
		{"sdk", func(id string) string { return "curl http://" + id + ".ctf.example" }, []func(string) bool{varied("CTF{sdk-scenario}")}},
		{"sdk-both", func(id string) string { return "nc " + id + ".sdk-both.local 1337" },
			[]func(string) bool{exact("CTF{first}"), varied("CTF{both-flags}"), exact("CTF{both-flags}")}},
		{"plain", func(id string) string { return "nc " + id + ".plain.local 1337" }, nil},
	} {
		t.Run(tc.scenario, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			e, _ := newTestEngine(t)
			p := scenario(t, tc.scenario)
			add := map[string]string{"host": "ctf.example"}
			check := func(step, id string, outs Outputs) {
				t.Helper()
				if outs.ConnectionInfo != tc.ci(id) {
					t.Fatalf("%s: connection_info = %q, want %q", step, outs.ConnectionInfo, tc.ci(id))
				}
				ok := len(outs.Flags) == len(tc.flags) && len(outs.Ignored) == 0
				for i := 0; ok && i < len(tc.flags); i++ {
					ok = tc.flags[i](outs.Flags[i])
				}
				if !ok {
					t.Fatalf("%s: flags = %q (ignored %q), want %d", step, outs.Flags, outs.Ignored, len(tc.flags))
				}
			}
			id := "a0b1c2d3a0b1c2d3"
			outs, err := e.Create(ctx, p, id, add)
			if err != nil {
				t.Fatal(err)
			}
			check("create", id, outs)
			for _, s := range []Strategy{UpdateInPlace, BlueGreen, Recreate} {
				add["round"] = string(s)
				newID, outs, err := e.Update(ctx, p, p, s, id, add)
				if err != nil {
					t.Fatalf("%s: %v", s, err)
				}
				if (newID != id) != (s == BlueGreen) {
					t.Fatalf("%s: identity %s → %s", s, id, newID)
				}
				id = newID
				check(string(s), id, outs)
			}
			if err := e.Destroy(ctx, p, id); err != nil {
				t.Fatal(err)
			}
			if refs := stacks(t, e); len(refs) != 0 {
				t.Fatalf("stacks left: %v", refs)
			}
		})
	}
}

// TestPrebuiltScenario runs a program shipped as a binary (runtime.options.binary).
func TestPrebuiltScenario(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	dir := t.TempDir()
	copyDir(t, filepath.Join(repoRoot, "scenarios", "prebuilt"), dir)
	build := exec.Command("go", "build", "-o", "main", ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	// Remove the sources: only the binary may be used.
	for _, f := range []string{"main.go", "go.mod", "go.sum"} {
		_ = os.Remove(filepath.Join(dir, f))
	}
	p, err := LoadProgram(dir)
	if err != nil {
		t.Fatal(err)
	}
	id := "b1b1b1b1b1b1b1b1"
	outs, err := e.Create(ctx, p, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOutputs(t, outs, "nc "+id+".outputs.local 1337", "CTF{"+id+"}", "CTF{second-"+id+"}")
	if err := e.Destroy(ctx, p, id); err != nil {
		t.Fatal(err)
	}
}

// TestPreview: a preview reports the program's failure, and never touches
// the real backend (it runs on a private copy of a template backend,
// preview.go): nothing is written there, even by the first preview.
func TestPreview(t *testing.T) {
	ctx := context.Background()
	e, backend := newTestEngine(t)
	for range 2 {
		if err := e.Preview(ctx, scenario(t, "additional"), map[string]string{"k": "v"}); err != nil {
			t.Fatal(err)
		}
	}
	err := e.Preview(ctx, scenario(t, "additional"), map[string]string{"fail": "in preview"})
	var oe *OpError
	if !errors.As(err, &oe) || !strings.Contains(oe.Summary, "failing on request: in preview") {
		t.Fatalf("failing preview: %v", err)
	}
	// Looked at before listing the stacks: a listing writes the backend's
	// meta.yaml.
	if files := tree(t, strings.TrimPrefix(backend, "file://")); len(files) > 1 {
		t.Fatalf("previews wrote to the backend: %q", files)
	}
	if refs := stacks(t, e); len(refs) != 0 {
		t.Fatalf("preview left stacks: %+v", refs)
	}
}

// TestConcurrentCreates deploys several stacks of one program at once.
func TestConcurrentCreates(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	p := scenario(t, "outputs")
	ids := []string{"c0c0c0c0c0c0c0c1", "c0c0c0c0c0c0c0c2", "c0c0c0c0c0c0c0c3"}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	outs := make([]Outputs, len(ids))
	for i, id := range ids {
		wg.Go(func() { outs[i], errs[i] = e.Create(ctx, p, id, nil) })
	}
	wg.Wait()
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("create %s: %v", id, errs[i])
		}
		wantOutputs(t, outs[i], "nc "+id+".outputs.local 1337", "CTF{"+id+"}", "CTF{second-"+id+"}")
	}
	if n := len(stacks(t, e)); n != len(ids) {
		t.Fatalf("%d stacks, want %d", n, len(ids))
	}
	for _, id := range ids {
		wg.Go(func() {
			if err := e.Destroy(ctx, p, id); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil && !errors.Is(err, os.ErrExist) {
		t.Fatal(err)
	}
}

// TestSecretOutputs: the event log masks secrets, so they are read back from the state;
// what the state says of an unset output (the unknown marker) is absent there too.
func TestSecretOutputs(t *testing.T) {
	for _, tc := range []struct {
		name, exports, ci string
		flags             []string
	}{
		{"secret flags", `ctx.Export("connection_info", pulumi.String("public"))
		ctx.Export("flags", pulumi.ToSecret(pulumi.ToStringArray([]string{"CTF{hidden}"})))`, "public", []string{"CTF{hidden}"}},
		// chall-manager's SDK with a secret connection info and Flags left unset.
		{"secret connection info, unset flags", `ctx.Export("connection_info", pulumi.ToSecret(pulumi.String("hidden")))
		ctx.Export("flags", pulumi.StringArrayOutput{})`, "hidden", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e, _ := newTestEngine(t)
			dir := t.TempDir()
			copyDir(t, filepath.Join(repoRoot, "scenarios", "outputs"), dir)
			src := "package main\n\nimport \"github.com/pulumi/pulumi/sdk/v3/go/pulumi\"\n\n" +
				"func main() {\n\tpulumi.Run(func(ctx *pulumi.Context) error {\n\t\t" + tc.exports + "\n\t\treturn nil\n\t})\n}\n"
			if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := LoadProgram(dir)
			if err != nil {
				t.Fatal(err)
			}
			outs, err := e.Create(ctx, p, "5ec5ec5ec5ec5ec5", nil)
			if err != nil {
				t.Fatal(err)
			}
			wantOutputs(t, outs, tc.ci, tc.flags...)
			if err := e.Destroy(ctx, p, "5ec5ec5ec5ec5ec5"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestNoFilesLeftBehind: operations write only into their own work directories, which
// they remove, never into the scenario folder nor $PULUMI_HOME/workspaces (where a
// selected stack would leave a file per work directory).
func TestNoFilesLeftBehind(t *testing.T) {
	ctx := context.Background()
	home, tmp := t.TempDir(), t.TempDir()
	e, err := New(Config{PulumiBin: pulumiBin, BackendURL: "file://" + t.TempDir(), Passphrase: testPassphrase,
		TempDir: tmp, Env: []string{"PULUMI_HOME=" + home}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	copyDir(t, filepath.Join(repoRoot, "scenarios", "additional"), dir)
	p, err := LoadProgram(dir)
	if err != nil {
		t.Fatal(err)
	}
	before := tree(t, dir)
	id := "1eaf1eaf1eaf1eaf"
	if _, err := e.Create(ctx, p, id, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.Update(ctx, p, p, UpdateInPlace, id, map[string]string{"k": "w"}); err != nil {
		t.Fatal(err)
	}
	if err := e.Preview(ctx, p, nil); err != nil {
		t.Fatal(err)
	}
	if after := tree(t, dir); !slices.Equal(before, after) {
		t.Fatalf("scenario folder changed:\nbefore %q\nafter  %q", before, after)
	}
	// The directory itself may be there (the CLI made it); no file may be.
	if ws := tree(t, filepath.Join(home, "workspaces")); len(ws) > 1 {
		t.Fatalf("stack selections left in PULUMI_HOME: %q", ws)
	}
	if err := e.Destroy(ctx, p, id); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "challfn-iac-") {
			t.Fatalf("work directory left: %s", en.Name())
		}
	}
}

// tree lists the files under dir with their size and modification time; nil when dir
// does not exist.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out = append(out, fmt.Sprintf("%s %d %s", rel, info.Size(), info.ModTime().Format(time.RFC3339Nano)))
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOpTimeoutInterruptsEngine: the per-operation timeout reaches the process through
// PulumiCommand.Run's context: pulumi is interrupted, cancels the update, and the failed
// create cleans up after itself.
func TestOpTimeoutInterruptsEngine(t *testing.T) {
	e, _ := newTestEngine(t)
	e.cfg.OpTimeout = 8 * time.Second // far beyond `stack init` and the cleanup's destroy
	_, err := e.Create(context.Background(), scenario(t, "additional"), "71e071e071e071e0", map[string]string{"sleep": "10m"})
	var oe *OpError
	if !errors.As(err, &oe) || oe.Op != "create" || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want a create OpError wrapping context.DeadlineExceeded", err)
	}
	if errors.Is(err, ErrCleanup) {
		t.Fatalf("cleanup failed: %v", err)
	}
	t.Logf("summary: %s", oe.Summary)
	if refs := stacks(t, e); len(refs) != 0 {
		t.Fatalf("interrupted create left stacks: %+v", refs)
	}
}

// TestUnusableBackend: every operation on the backend reports the CLI's complaint as an *OpError, whether
// the process ran through a Workspace method or through PulumiCommand.Run.
func TestUnusableBackend(t *testing.T) {
	ctx := context.Background()
	// A file backend under a regular file: no directory can be made there.
	file := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{PulumiBin: pulumiBin, BackendURL: "file://" + file + "/state", Passphrase: testPassphrase, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	p := scenario(t, "additional")
	for _, tc := range []struct {
		op  string
		run func() error
	}{
		{"list", func() error { _, err := e.ListStacks(ctx); return err }},
		{"create", func() error { _, err := e.Create(ctx, p, "0bad0bad0bad0bad", nil); return err }},
		{"update", func() error {
			_, _, err := e.Update(ctx, p, p, UpdateInPlace, "0bad0bad0bad0bad", nil)
			return err
		}},
		{"destroy", func() error { return e.Destroy(ctx, p, "0bad0bad0bad0bad") }},
		// Not preview: it never uses the real backend (preview.go).
	} {
		t.Run(tc.op, func(t *testing.T) {
			err := tc.run()
			var oe *OpError
			if !errors.As(err, &oe) {
				t.Fatalf("err = %v, want *OpError", err)
			}
			if oe.Op != tc.op || !strings.Contains(oe.Summary, "not a directory") || oe.Log == "" || oe.Err == nil {
				t.Fatalf("OpError = %+v", oe)
			}
			// The auto package's error text (exit status, code, stdout) stays in Log.
			if strings.Contains(oe.Summary, "\n") || strings.Contains(oe.Summary, "code: ") {
				t.Fatalf("summary %q is not the CLI's one-line complaint", oe.Summary)
			}
			t.Logf("summary: %s", oe.Summary)
		})
	}
}

// TestUpdateOfLostStack: an in-place update of a stack the backend does not have deploys
// it afresh, and destroying it is idempotent.
func TestUpdateOfLostStack(t *testing.T) {
	ctx := context.Background()
	e, _ := newTestEngine(t)
	p := scenario(t, "additional")
	id := "10571057105710a7"
	gotID, outs, err := e.Update(ctx, p, p, UpdateInPlace, id, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != id {
		t.Fatalf("identity changed to %q", gotID)
	}
	wantOutputs(t, outs, id+"?k=v", "CTF{"+id+"}")
	if !hasStack(t, e, "additional", id) {
		t.Fatal("stack missing after the update")
	}
	for range 2 {
		if err := e.DestroyStack(ctx, "additional", id); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRequireWithoutJail: with sandbox.Require, an Engine that cannot jail a program
// (here a challfn-sandbox whose jail never starts) is refused, saying why; with sandbox.Auto
// it runs programs without a jail and says so.
func TestRequireWithoutJail(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "challfn-sandbox")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\n[ \"$1\" = true ] && exit 0\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := Config{PulumiBin: pulumiBin, BackendURL: "file://" + t.TempDir(), Passphrase: testPassphrase, TempDir: t.TempDir(), SandboxBin: broken}
	cfg.Sandbox = sandbox.Require
	if _, err := New(cfg); !errors.Is(err, sandbox.ErrUnavailable) || !strings.Contains(err.Error(), "jail did not start") {
		t.Fatalf("Require without a working jail: %v", err)
	}
	cfg.Sandbox = sandbox.Auto
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if flavor, why := e.Sandbox(); flavor != sandbox.FlavorNone || why == "" {
		t.Fatalf("Auto without a working jail: flavor %q (%q)", flavor, why)
	}
}
