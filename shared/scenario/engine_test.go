package scenario

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/challfn/challfn/internal/registry"
	"github.com/challfn/challfn/shared/iac"
)

var installOnce struct {
	sync.Once
	pulumi string
	err    error
}

// pulumiCLI returns the Pulumi CLI built by scripts/install-pulumi.sh, running
// the script only when the CLI or the language host is missing (the iac tests
// rebuild the language host themselves; two concurrent rebuilds would race).
func pulumiCLI(t *testing.T) string {
	t.Helper()
	installOnce.Do(func() {
		dir, err := filepath.Abs(".")
		if err != nil {
			installOnce.err = err
			return
		}
		for !exists(filepath.Join(dir, "scripts", "install-pulumi.sh")) {
			if dir == filepath.Dir(dir) {
				installOnce.err = os.ErrNotExist
				return
			}
			dir = filepath.Dir(dir)
		}
		bin := filepath.Join(dir, ".bin")
		installOnce.pulumi = filepath.Join(bin, "pulumi")
		if exists(installOnce.pulumi) && exists(filepath.Join(bin, "pulumi-language-go")) {
			return
		}
		cmd := exec.Command("bash", filepath.Join(dir, "scripts", "install-pulumi.sh"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			installOnce.err = err
			t.Logf("install-pulumi.sh:\n%s", out)
		}
	})
	if installOnce.err != nil {
		t.Fatalf("the real Pulumi engine is required: %v", installOnce.err)
	}
	return installOnce.pulumi
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// TestRealEngine registers a source scenario with the real engine's preview,
// then deploys it from another Manager that can only download the compiled
// program (no toolchain), with the real engine.
func TestRealEngine(t *testing.T) {
	engine, err := iac.New(iac.Config{
		PulumiBin:  pulumiCLI(t),
		BackendURL: "file://" + t.TempDir(),
		Passphrase: "challfn-scenario-test",
		TempDir:    t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	reg := startRegistry(t, registry.Options{})
	ref := reg.Host() + "/scn/simple:engine"
	mustPush(t, "testdata/simple", ref, RegistryOptions{PlainHTTP: true})
	store := newStore(t)
	a := newManager(t, Config{StoreURL: store, Previewer: engine})

	s, err := a.Register(ctx, ref, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Register(ctx, ref, map[string]string{"fail": "boom"})
	se := wantKind(t, err, KindSpec)
	if !strings.Contains(se.Detail, "failing on request: boom") {
		t.Fatalf("preview failure detail lacks the program's error: %q", se.Detail)
	}
	if a.compiles.Load() != 1 {
		t.Fatalf("compiled %d times, want 1", a.compiles.Load())
	}
	if refs, err := engine.ListStacks(ctx); err != nil || len(refs) != 0 {
		t.Fatalf("previews left stacks %v (%v)", refs, err)
	}

	b := newManager(t, Config{StoreURL: store, GoBinary: filepath.Join(t.TempDir(), "no-go-here")})
	g, err := b.Get(ctx, s.Digest)
	if err != nil {
		t.Fatal(err)
	}
	const id = "a0b1c2d3a0b1c2d3"
	outs, err := engine.Create(ctx, g.Program, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if outs.ConnectionInfo != "nc "+id+".simple.local 1337" || len(outs.Flags) != 1 || outs.Flags[0] != "CTF{simple-"+id+"}" {
		t.Fatalf("outputs %+v", outs)
	}
	if err := engine.Destroy(ctx, g.Program, id); err != nil {
		t.Fatal(err)
	}
	if b.compiles.Load() != 0 {
		t.Fatal("the deploying manager compiled")
	}
}
