// Command challfn-local runs the whole of challfn on this machine, on an
// embedded default: an embedded etcd (data in .run/etcd), an in-process OCI
// registry with the example scenarios pushed, a file:// Pulumi backend, and
// the three functions behind one address, as clients expect one base URL
// (REST over HTTP/1.1 or h2c, and chall-manager's gRPC services over h2c).
// Asynchronous work travels between the functions as binary-mode CloudEvents
// over HTTP (the encoding Knative brokers use) through a small local broker,
// and the janitor is fired on a short schedule the same way.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/internal/localetcd"
	"github.com/challfn/challfn/internal/localstack"
	"github.com/challfn/challfn/internal/registry"
	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/sandbox"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/telemetry"
	"github.com/challfn/challfn/shared/version"
)

func main() {
	var (
		addr      = flag.String("addr", "127.0.0.1:8080", "address of the REST API (all functions behind it)")
		regAddr   = flag.String("registry", "127.0.0.1:5001", "address of the local OCI registry")
		dir       = flag.String("dir", ".run", "folder for etcd data, Pulumi state and caches")
		examples  = flag.String("scenarios", "scenarios", "folder whose sub-folders are pushed as examples/<name>:latest")
		janitorEv = flag.Duration("janitor-every", 15*time.Second, "janitor schedule")
		monitor   = flag.Bool("monitoring", false, "also run the monitoring stack of knative/monitoring/local on 127.0.0.1 (Jaeger :16686, Prometheus :9090, Alertmanager :9093; scripts/install-monitoring.sh) and export to it")
	)
	flag.Parse()
	// The environment holds challfn's credentials (see shared/funcmain).
	_ = sandbox.SetUndumpable()
	proc, perr := config.ProcessFromEnv()
	log := telemetry.NewLogger(os.Stderr, telemetry.LogOptions{Level: proc.LogLevel, LogSourceID: proc.LogSourceID})
	slog.SetDefault(log)
	if perr != nil {
		log.Warn("process configuration: using defaults for the values in error", "error", perr)
	}
	if err := run(*addr, *regAddr, *dir, *examples, *janitorEv, *monitor, proc, log); err != nil {
		log.Error("challfn-local stopped", "error", err)
		os.Exit(1)
	}
}

func run(addr, regAddr, dir, examples string, janitorEvery time.Duration, monitoring bool, proc config.Process, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for _, sub := range []string{"etcd", "state", "scenarios", "cache"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return err
		}
	}
	if monitoring {
		stop, err := startMonitoring(ctx, filepath.Join(dir, "monitoring"))
		if err != nil {
			return err
		}
		defer stop()
	}
	t, err := telemetry.Setup(ctx, "challfn-local", version.Version, telemetry.WithFlushTimeout(proc.FlushTimeout))
	if err != nil {
		return err
	}
	defer t.Shutdown(context.Background())

	e, err := localetcd.StartEmbedded(ctx, filepath.Join(dir, "etcd"))
	if err != nil {
		return fmt.Errorf("embedded etcd: %w", err)
	}
	defer e.Close()
	reg, err := registry.Start(ctx, registry.Options{Addr: regAddr})
	if err != nil {
		return fmt.Errorf("local registry: %w", err)
	}
	defer reg.Close()
	refs := pushExamples(ctx, examples, reg.Host(), log)

	vars := allinone.Vars(dir, e.Endpoints()[0])
	vars["JANITOR_ORPHAN_GRACE"] = "2m"
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	p, err := allinone.Start(ctx, l, func(k string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return vars[k]
	}, "local", log)
	if err != nil {
		return err
	}
	defer p.Close()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = p.Server.Shutdown(sctx)
	}()
	go allinone.TickJanitor(ctx, p.URL+allinone.JanitorPath, allinone.Client(p.App), janitorEvery, log)

	fmt.Fprintf(os.Stderr, "\nchallfn is running at http://%s (etcd %s, registry %s, state %s)\n", addr, e.Endpoints()[0], reg.Host(), dir)
	fmt.Fprintf(os.Stderr, "  gRPC (chall-manager-cli, chall-manager-janitor): --url %s\n", addr)
	for _, r := range refs {
		fmt.Fprintf(os.Stderr, "  example scenario: %s\n", r)
	}
	fmt.Fprintln(os.Stderr)
	if err := p.Serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// pushExamples pushes every scenario folder under root to the local registry.
func pushExamples(ctx context.Context, root, host string, log *slog.Logger) []string {
	entries, err := os.ReadDir(root)
	if err != nil {
		log.Warn("no example scenarios pushed", "error", err)
		return nil
	}
	var refs []string
	for _, en := range entries {
		if !en.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, en.Name(), "Pulumi.yaml")); err != nil {
			continue
		}
		ref := host + "/examples/" + en.Name() + ":latest"
		if _, err := scenario.Push(ctx, filepath.Join(root, en.Name()), ref, scenario.RegistryOptions{PlainHTTP: true}); err != nil {
			log.Warn("pushing example scenario", "dir", en.Name(), "error", err)
			continue
		}
		refs = append(refs, ref)
	}
	return refs
}

// startMonitoring starts Jaeger, Prometheus and Alertmanager on their usual
// loopback ports with the configurations of knative/monitoring/local (the
// working directory must be the repository) and points OTEL at Jaeger's OTLP
// receiver unless OTEL_EXPORTER_OTLP_ENDPOINT says otherwise.
func startMonitoring(ctx context.Context, dir string) (stop func(), err error) {
	root, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	st, err := localstack.Start(ctx, localstack.Options{Root: root, Dir: dir})
	if err != nil {
		return nil, fmt.Errorf("monitoring stack: %w", err)
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" {
		os.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", st.OTLP)
	}
	fmt.Fprintf(os.Stderr, "monitoring: Jaeger API %s/api/services (traces: %s/api/traces?service=challfn-local), Prometheus %s, Alertmanager %s (logs in %s)\n",
		st.Jaeger, st.Jaeger, st.Prometheus, st.Alertmanager, dir)
	return st.Close, nil
}
