package main

// Integration tests: scenarios/example-tcp deployed with the real Pulumi engine through
// challfn's shared/iac, the provider found on PATH as an ambient plugin (.bin/, installed by
// scripts/install-providers.sh from this module).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/identity"
)

const testPassphrase = "challfn-test-passphrase"

var (
	setupOnce sync.Once
	repoRoot  string
	setupErr  error
)

// setup installs the CLI, the language host and this provider (the current sources) into
// .bin/, once per test binary. The real engine is required, never skipped.
func setup(t testing.TB) {
	t.Helper()
	setupOnce.Do(func() {
		wd, err := os.Getwd()
		if err != nil {
			setupErr = err
			return
		}
		repoRoot = filepath.Join(wd, "..", "..")
		for _, script := range []string{"install-pulumi.sh", "install-providers.sh"} {
			cmd := exec.Command("bash", filepath.Join(repoRoot, "scripts", script))
			out, err := cmd.CombinedOutput()
			if err != nil {
				setupErr = fmt.Errorf("%s: %w\n%s", script, err, out)
				return
			}
		}
	})
	if setupErr != nil {
		t.Fatal(setupErr)
	}
}

func newEngine(t testing.TB, backend string) *iac.Engine {
	t.Helper()
	e, err := iac.New(iac.Config{
		PulumiBin:  filepath.Join(repoRoot, ".bin", "pulumi"),
		BackendURL: backend,
		Passphrase: testPassphrase,
		TempDir:    t.TempDir(),
		// The plugin must come from PATH: an empty plugin cache, and no download (which
		// would reach out to the Internet) when it is not found.
		Env: []string{"PULUMI_IGNORE_AMBIENT_PLUGINS=", "PULUMI_HOME=" + t.TempDir(),
			"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func exampleProgram(t testing.TB) iac.Program {
	t.Helper()
	p, err := iac.LoadProgram(filepath.Join(repoRoot, "scenarios", "example-tcp"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// connPort reads the port from a connection_info `nc 127.0.0.1 <port>`.
func connPort(t testing.TB, ci string) int {
	t.Helper()
	f := strings.Fields(ci)
	if len(f) != 3 || f[0] != "nc" || f[1] != "127.0.0.1" {
		t.Fatalf("connection_info = %q, want nc 127.0.0.1 <port>", ci)
	}
	port, err := strconv.Atoi(f[2])
	if err != nil || port <= 0 {
		t.Fatalf("connection_info = %q: bad port", ci)
	}
	return port
}

// statePID returns the pid recorded for the stack's Service in the file backend's state:
// what a later destroy will act on.
func statePID(t testing.TB, backendDir, project, identity string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(backendDir, ".pulumi", "stacks", project, identity+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Checkpoint struct {
			Latest struct {
				Resources []struct {
					Type    string         `json:"type"`
					Outputs map[string]any `json:"outputs"`
				} `json:"resources"`
			} `json:"latest"`
		} `json:"checkpoint"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	for _, r := range st.Checkpoint.Latest.Resources {
		if r.Type == string(serviceType) {
			if pid, ok := r.Outputs["pid"].(float64); ok {
				return int(pid)
			}
		}
	}
	t.Fatalf("no %s with a pid in the state of %s", serviceType, identity)
	return 0
}

func hasStack(t testing.TB, e *iac.Engine, project, identity string) bool {
	t.Helper()
	refs, err := e.ListStacks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return slices.Contains(refs, iac.StackRef{Project: project, Identity: identity})
}

func wantGone(t testing.TB, what string, pid, port int) {
	t.Helper()
	if !portClosed(port) {
		t.Fatalf("%s: port %d still open", what, port)
	}
	if !gone(pid) {
		t.Fatalf("%s: process %d still running", what, pid)
	}
}

// TestExampleScenario deploys an instance, connects to it as a player would, replaces its
// service through an update, and destroys it from another Engine.
func TestExampleScenario(t *testing.T) {
	setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	backend := "file://" + dir
	e := newEngine(t, backend)
	p := exampleProgram(t)
	id := identity.New()
	flag := "CTF{" + id + "}"

	outs, err := e.Create(ctx, p, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = newEngine(t, backend).DestroyStack(context.Background(), p.Project, id) })
	if !slices.Equal(outs.Flags, []string{flag}) {
		t.Fatalf("flags = %q, want %q", outs.Flags, flag)
	}
	port := connPort(t, outs.ConnectionInfo)
	// The service outlived the engine run that created it, and answers with the flag.
	if got := dialFlag(t, port); got != flag {
		t.Fatalf("service replied %q, want %q", got, flag)
	}
	pid := statePID(t, dir, p.Project, id)

	// A changed flag replaces the service: a new process on a new port, the old one stopped.
	const newFlag = "CTF{replaced}"
	gotID, outs2, err := e.Update(ctx, p, p, iac.UpdateInPlace, id, map[string]string{"flag": newFlag})
	if err != nil {
		t.Fatal(err)
	}
	if gotID != id || !slices.Equal(outs2.Flags, []string{newFlag}) {
		t.Fatalf("update = %s %+v", gotID, outs2)
	}
	port2 := connPort(t, outs2.ConnectionInfo)
	pid2 := statePID(t, dir, p.Project, id)
	if port2 == port || pid2 == pid {
		t.Fatalf("update did not replace the service: port %d→%d, pid %d→%d", port, port2, pid, pid2)
	}
	if got := dialFlag(t, port2); got != newFlag {
		t.Fatalf("replaced service replied %q, want %q", got, newFlag)
	}
	wantGone(t, "replaced service", pid, port)

	// Destroy from another Engine value: only the state in the backend is shared.
	other := newEngine(t, backend)
	if err := other.DestroyStack(ctx, p.Project, id); err != nil {
		t.Fatal(err)
	}
	wantGone(t, "destroyed service", pid2, port2)
	if hasStack(t, other, p.Project, id) {
		t.Fatal("stack still in the backend after destroy")
	}
}

// TestExampleDestroyAfterCrash: a service that died on its own (killed, machine restarted)
// does not block the destroy of its instance.
func TestExampleDestroyAfterCrash(t *testing.T) {
	setup(t)
	ctx := context.Background()
	dir := t.TempDir()
	e := newEngine(t, "file://"+dir)
	p := exampleProgram(t)
	id := identity.New()
	outs, err := e.Create(ctx, p, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	port := connPort(t, outs.ConnectionInfo)
	pid := statePID(t, dir, p.Project, id)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !gone(pid) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.DestroyStack(ctx, p.Project, id); err != nil {
		t.Fatal(err)
	}
	wantGone(t, "crashed service", pid, port)
	if hasStack(t, e, p.Project, id) {
		t.Fatal("stack still in the backend after destroy")
	}
}

// TestExamplePluginFromPath: with ambient plugins ignored the engine cannot find the
// provider (nothing in the empty PULUMI_HOME, no download possible): the PATH lookup is
// what makes the example work, and a missing provider fails the create cleanly.
func TestExamplePluginFromPath(t *testing.T) {
	setup(t)
	e, err := iac.New(iac.Config{
		PulumiBin:  filepath.Join(repoRoot, ".bin", "pulumi"),
		BackendURL: "file://" + t.TempDir(),
		Passphrase: testPassphrase,
		TempDir:    t.TempDir(),
		OpTimeout:  2 * time.Minute,
		Env: []string{"PULUMI_IGNORE_AMBIENT_PLUGINS=true", "PULUMI_HOME=" + t.TempDir(),
			"PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true"},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.Create(context.Background(), exampleProgram(t), identity.New(), nil)
	var oe *iac.OpError
	if !errors.As(err, &oe) || !strings.Contains(oe.Log, "challfn-local") {
		t.Fatalf("create without the ambient provider: %v", err)
	}
	t.Logf("summary: %s", oe.Summary)
}

// BenchmarkExampleCreateDestroy measures one instance's create (engine run, service started)
// and destroy (engine run, service stopped, port closed).
func BenchmarkExampleCreateDestroy(b *testing.B) {
	setup(b)
	ctx := context.Background()
	e := newEngine(b, "file://"+b.TempDir())
	p := exampleProgram(b)
	var create, destroy time.Duration
	for b.Loop() {
		id := identity.New()
		t0 := time.Now()
		outs, err := e.Create(ctx, p, id, nil)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		port := connPort(b, outs.ConnectionInfo)
		if err := e.DestroyStack(ctx, p.Project, id); err != nil {
			b.Fatal(err)
		}
		destroy += time.Since(t1)
		create += t1.Sub(t0)
		if !portClosed(port) {
			b.Fatalf("port %d open after destroy", port)
		}
	}
	b.ReportMetric(float64(create.Milliseconds())/float64(b.N), "create-ms/op")
	b.ReportMetric(float64(destroy.Milliseconds())/float64(b.N), "destroy-ms/op")
}
