package iac

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optremove"

	"github.com/challfn/challfn/shared/sandbox"
)

// countingPulumi puts a wrapper script at <root>/bin/pulumi that logs each invocation, then
// execs the real CLI. It returns the wrapper and a function that reads and resets the count.
func countingPulumi(b *testing.B) (root, bin string, take func() int) {
	b.Helper()
	root = b.TempDir()
	log := filepath.Join(root, "invocations.log")
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		b.Fatal(err)
	}
	bin = filepath.Join(root, "bin", "pulumi")
	script := fmt.Sprintf("#!/bin/sh\necho \"$1 $2\" >> %q\nexec %q \"$@\"\n", log, pulumiBin)
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		b.Fatal(err)
	}
	// The wrapper's directory comes first on PATH: keep our language host there too, and
	// challfn-sandbox, which the Engine looks for next to the CLI.
	for _, name := range []string{"pulumi-language-go", "challfn-sandbox"} {
		if err := os.Symlink(filepath.Join(filepath.Dir(pulumiBin), name), filepath.Join(root, "bin", name)); err != nil {
			b.Fatal(err)
		}
	}
	take = func() int {
		data, _ := os.ReadFile(log)
		_ = os.Remove(log)
		return strings.Count(string(data), "\n")
	}
	return root, bin, take
}

// measure times fn b.N times and reports the median and, when take counts them, the
// pulumi processes per run.
func measure(b *testing.B, take func() int, setup func(i int), fn func(i int) error) {
	b.Helper()
	var times []time.Duration
	procs := 0
	counted := take != nil
	if !counted {
		take = func() int { return 0 }
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		if setup != nil {
			setup(i)
		}
		take()
		b.StartTimer()
		start := time.Now()
		if err := fn(i); err != nil {
			b.Fatal(err)
		}
		times = append(times, time.Since(start))
		b.StopTimer()
		procs += take()
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Milliseconds()), "median-ms")
	if counted {
		b.ReportMetric(float64(procs)/float64(b.N), "procs/op")
	}
}

func benchEngine(b *testing.B, bin string) *Engine {
	e, err := New(Config{PulumiBin: bin, BackendURL: "file://" + b.TempDir(), Passphrase: testPassphrase, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

func BenchmarkEngine(b *testing.B) {
	ctx := context.Background()
	p := scenario(b, "outputs")
	id := func(i int) string { return fmt.Sprintf("be%014d", i) }

	b.Run("Create", func(b *testing.B) {
		_, bin, take := countingPulumi(b)
		e := benchEngine(b, bin)
		if _, err := e.Create(ctx, p, "warmup0000000000", nil); err != nil { // compile once
			b.Fatal(err)
		}
		measure(b, take, nil, func(i int) error {
			_, err := e.Create(ctx, p, id(i), nil)
			return err
		})
	})

	b.Run("UpdateInPlace", func(b *testing.B) {
		_, bin, take := countingPulumi(b)
		e := benchEngine(b, bin)
		if _, err := e.Create(ctx, p, id(0), nil); err != nil {
			b.Fatal(err)
		}
		measure(b, take, nil, func(i int) error {
			_, _, err := e.Update(ctx, p, p, UpdateInPlace, id(0), map[string]string{"n": fmt.Sprint(i)})
			return err
		})
	})

	// A registration's preview: one process on a private copy of the
	// project's template backend (preview.go); the template's `stack init`
	// is made once, before the timer.
	b.Run("Preview", func(b *testing.B) {
		_, bin, take := countingPulumi(b)
		e := benchEngine(b, bin)
		if err := e.Preview(ctx, p, nil); err != nil { // compile, template
			b.Fatal(err)
		}
		measure(b, take, nil, func(int) error { return e.Preview(ctx, p, nil) })
	})
	// Baseline: the preview as it was, on a throw-away stack of the real
	// backend (auto.NewStack, `preview`, Workspace.RemoveStack).
	b.Run("BaselinePreviewOnBackend", func(b *testing.B) {
		_, bin, take := countingPulumi(b)
		e := benchEngine(b, bin)
		if err := previewOnBackend(ctx, e, p); err != nil { // compile
			b.Fatal(err)
		}
		measure(b, take, nil, func(int) error { return previewOnBackend(ctx, e, p) })
	})

	b.Run("Destroy", func(b *testing.B) {
		_, bin, take := countingPulumi(b)
		e := benchEngine(b, bin)
		measure(b, take, func(i int) {
			if _, err := e.Create(ctx, p, id(i), nil); err != nil {
				b.Fatal(err)
			}
		}, func(i int) error {
			return e.Destroy(ctx, p, id(i))
		})
	})

	// Baseline: the Automation API sequence chall-manager runs for a create (docs/contract.md §7.2,
	// §7.3): UpsertStackLocalSource (with its `pulumi version`), SetConfig x2, Up, Export.
	b.Run("BaselineAutoCreate", func(b *testing.B) {
		root, _, take := countingPulumi(b)
		backend := "file://" + b.TempDir()
		dir := b.TempDir()
		copyDir(b, p.Dir, dir)
		env := map[string]string{
			"PULUMI_BACKEND_URL":       backend,
			"PULUMI_CONFIG_PASSPHRASE": testPassphrase,
			"PULUMI_SKIP_UPDATE_CHECK": "true",
			"CM_PROJECT":               p.Project,
		}
		create := func(identity string) error {
			cmd, err := auto.NewPulumiCommand(&auto.PulumiCommandOptions{Root: root})
			if err != nil {
				return err
			}
			st, err := auto.UpsertStackLocalSource(ctx, auto.FullyQualifiedStackName("organization", p.Project, identity),
				dir, auto.Pulumi(cmd), auto.EnvVars(env))
			if err != nil {
				return err
			}
			if err := st.SetConfig(ctx, "identity", auto.ConfigValue{Value: identity}); err != nil {
				return err
			}
			if err := st.SetConfig(ctx, "additional", auto.ConfigValue{Value: "{}"}); err != nil {
				return err
			}
			res, err := st.Up(ctx)
			if err != nil {
				return err
			}
			if _, err := st.Export(ctx); err != nil {
				return err
			}
			if _, ok := res.Outputs["connection_info"]; !ok {
				return fmt.Errorf("no connection_info")
			}
			return nil
		}
		if err := create("warmup0000000000"); err != nil {
			b.Fatal(err)
		}
		measure(b, take, nil, func(i int) error { return create(id(i)) })
	})
}

// BenchmarkSandbox: the cost of the containment per create and destroy (the supervisor
// around every CLI process, the program's jail), against sandbox.Off, median of b.N:
//
//	go test ./shared/iac -run '^$' -bench BenchmarkSandbox -benchtime=5x
func BenchmarkSandbox(b *testing.B) {
	ctx := context.Background()
	p := scenario(b, "outputs")
	for _, mode := range []sandbox.Mode{sandbox.Require, sandbox.Off} {
		e, err := New(Config{PulumiBin: pulumiBin, BackendURL: "file://" + b.TempDir(), Passphrase: testPassphrase, TempDir: b.TempDir(), Sandbox: mode})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.Create(ctx, p, "warmup0000000000", nil); err != nil { // compile once
			b.Fatal(err)
		}
		flavor, _ := e.Sandbox()
		// Fresh identities across the benchmark's runs (b.N=1 first, then b.N).
		n := 0
		next := func() string { n++; return fmt.Sprintf("sb%014d", n) }
		b.Run("Create/"+string(mode)+"/"+string(flavor), func(b *testing.B) {
			measure(b, nil, nil, func(int) error {
				_, err := e.Create(ctx, p, next(), nil)
				return err
			})
		})
		b.Run("Destroy/"+string(mode)+"/"+string(flavor), func(b *testing.B) {
			var id string
			measure(b, nil, func(int) {
				id = next()
				if _, err := e.Create(ctx, p, id, nil); err != nil {
					b.Fatal(err)
				}
			}, func(int) error { return e.Destroy(ctx, p, id) })
		})
	}
}

// previewOnBackend is the preview before preview.go, kept as the baseline.
func previewOnBackend(ctx context.Context, e *Engine, p Program) error {
	ws, err := e.workspace(ctx, p, e.cfg.NewIdentity(), nil)
	if err != nil {
		return err
	}
	defer ws.close()
	stack, err := auto.NewStack(ctx, ws.stack, ws.ws)
	if err != nil {
		return err
	}
	r := ws.run(ctx, slices.Concat(previewArgs, []string{"--stack", stack.Name(), "--event-log", ws.eventLog()})...)
	if err := ws.ws.RemoveStack(ctx, stack.Name(), optremove.Force()); err != nil {
		return err
	}
	return r.err
}
