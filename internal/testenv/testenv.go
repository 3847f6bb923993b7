// Package testenv starts a whole challfn on loopback for end-to-end tests,
// with real parts only: an embedded etcd, an in-process OCI registry holding
// the scenarios of scenarios/, the real Pulumi engine on a file:// backend,
// the functions behind one HTTP address exactly as the local run serves them,
// and events delivered over HTTP through a broker.
package testenv

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/etcd/etcdtest"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/registry"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/telemetry"
)

// Root is the repository root.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var installOnce sync.Once

// Install makes sure the Pulumi CLI, our language host and the example
// provider are built (never skipping: a missing engine is a failure).
func Install(t testing.TB) {
	t.Helper()
	var err error
	var out []byte
	installOnce.Do(func() {
		for _, s := range []string{"scripts/install-pulumi.sh", "scripts/install-providers.sh"} {
			cmd := exec.Command(filepath.Join(Root(), s))
			if out, err = cmd.CombinedOutput(); err != nil {
				err = fmt.Errorf("%s: %w\n%s", s, err, out)
				return
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(Root(), ".bin")
	if _, err := os.Stat(filepath.Join(bin, "pulumi")); err != nil {
		t.Fatalf("pulumi CLI missing after install: %v", err)
	}
	os.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	os.Setenv("PULUMI_SKIP_UPDATE_CHECK", "true")
}

var cmOnce sync.Once

// ChallManager builds chall-manager v0.6.6's own binaries if needed
// (scripts/install-chall-manager.sh, from the Go module proxy) and returns
// the path of one of them: "chall-manager-cli", "chall-manager-janitor" or
// "chall-manager". A missing binary is a failure, never a skip.
func ChallManager(t testing.TB, name string) string {
	t.Helper()
	var err error
	cmOnce.Do(func() {
		s := filepath.Join(Root(), "scripts", "install-chall-manager.sh")
		if out, cerr := exec.Command(s).CombinedOutput(); cerr != nil {
			err = fmt.Errorf("%s: %w\n%s", s, cerr, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(Root(), ".bin", name)
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s missing after install: %v", name, err)
	}
	return bin
}

// Events says how asynchronous work travels.
type Events int

const (
	// Broker: events go through an in-process broker that POSTs them to the
	// instance function's /events, as a Knative Broker does.
	Broker Events = iota
	// Inline: no event sink: the function process's own queue (mem://)
	// delivers the events, in the background, as a single process would.
	Inline
)

// Options of an environment.
type Options struct {
	Events Events
	// Env overrides configuration variables (LOCK_TTL, ...).
	Env map[string]string
	// Etcd, when set, is used instead of a new embedded server (several
	// environments = several function processes sharing one etcd).
	Etcd *etcd.Embedded
	// Dir, when set, is used for state and caches (shared Pulumi backend and
	// scenario store between environments).
	Dir string
	// Registry, when set, is used instead of a new registry.
	Registry *registry.Server
	// Log, when set, receives every log line of the functions (debug level
	// and up) instead of stderr at warn level, for tests that inspect logs.
	Log io.Writer
}

// Env is a running challfn.
type Env struct {
	URL      string // base URL of the REST API
	App      *bootstrap.App
	Etcd     *etcd.Embedded
	Client   *clientv3.Client
	Registry *registry.Server
	Broker   *events.Broker
	Dir      string
	Server   *http.Server
}

// Start starts an environment; everything stops when the test ends.
func Start(t testing.TB, o Options) *Env {
	t.Helper()
	Install(t)
	ctx := context.Background()
	e := &Env{Etcd: o.Etcd, Registry: o.Registry, Dir: o.Dir}
	if e.Etcd == nil {
		e.Etcd = etcdtest.Server(t)
	}
	if e.Dir == "" {
		e.Dir = t.TempDir()
	}
	if e.Registry == nil {
		reg, err := registry.Start(ctx, registry.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reg.Close() })
		e.Registry = reg
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.URL = "http://" + l.Addr().String()

	vars := map[string]string{
		"ETCD_ENDPOINTS":           e.Etcd.Endpoints()[0],
		"PULUMI_BACKEND_URL":       "file://" + filepath.Join(e.Dir, "state"),
		"PULUMI_CONFIG_PASSPHRASE": "challfn-test",
		"SCENARIO_STORE_URL":       "file://" + filepath.Join(e.Dir, "scenarios"),
		"CACHE_DIR":                filepath.Join(t.TempDir(), "cache"),
		"OCI_INSECURE":             "true",
		"CHALLFN_PULUMI":           filepath.Join(Root(), ".bin", "pulumi"),
		"LOCK_TTL":                 "5s",
	}
	if o.Events == Broker {
		vars["EVENTS_SINK_URL"] = e.URL + allinone.BrokerPath
	}
	for k, v := range o.Env {
		vars[k] = v
	}
	for _, d := range []string{"state", "scenarios"} {
		if err := os.MkdirAll(filepath.Join(e.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(func(k string) string { return vars[k] })
	if err != nil {
		t.Fatal(err)
	}
	// Not t.Log: the broker and deployments may log after the test ends.
	// The functions' own log handler (JSON, with trace_id, challenge_id and identity),
	// so that tests read the lines operators read.
	log := slog.New(telemetry.NewLogHandler(os.Stderr, telemetry.LogOptions{Level: slog.LevelWarn}))
	if o.Log != nil {
		log = slog.New(telemetry.NewLogHandler(o.Log, telemetry.LogOptions{Level: slog.LevelDebug}))
	}
	e.App, err = bootstrap.New(ctx, cfg, "test", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.App.Close() })
	e.Client = e.App.Etcd

	e.Broker = &events.Broker{Target: e.URL + instance.EventsPath, Log: log, Backoff: 50 * time.Millisecond, Client: allinone.Client(e.App)}
	h, err := allinone.Mux(ctx, e.App, e.Broker)
	if err != nil {
		t.Fatal(err)
	}
	e.Server = httpx.Server(h)
	go httpx.Serve(e.Server, l)
	t.Cleanup(func() {
		e.Broker.Wait()
		e.Broker.Close()
		e.Server.Close()
	})
	return e
}

// pushed remembers what each registry already holds. It is keyed by the
// registry itself, not its host: a closed registry's port is soon handed to
// a new, empty one.
var pushed sync.Map // pushKey → ref

type pushKey struct {
	reg  *registry.Server
	name string
}

// Scenario pushes scenarios/<name> (once per registry) and returns its
// reference.
func (e *Env) Scenario(t testing.TB, name string) string {
	t.Helper()
	key := pushKey{e.Registry, name}
	if ref, ok := pushed.Load(key); ok {
		return ref.(string)
	}
	ref := e.Registry.Host() + "/scenarios/" + name + ":latest"
	if _, err := scenario.Push(context.Background(), filepath.Join(Root(), "scenarios", name), ref, scenario.RegistryOptions{PlainHTTP: true}); err != nil {
		t.Fatalf("push %s: %v", name, err)
	}
	pushed.Store(key, ref)
	return ref
}

// PushDir pushes any folder under a name and returns its reference.
func (e *Env) PushDir(t testing.TB, dir, name string) string {
	t.Helper()
	ref := e.Registry.Host() + "/scenarios/" + name + ":latest"
	if _, err := scenario.Push(context.Background(), dir, ref, scenario.RegistryOptions{PlainHTTP: true}); err != nil {
		t.Fatalf("push %s: %v", dir, err)
	}
	return ref
}

// Do sends a request and returns the status and body.
func (e *Env) Do(t testing.TB, method, path, body string) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = stringsReader(body)
	}
	req, err := http.NewRequest(method, e.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// Wait blocks until the asynchronous work sent so far is done: the events of
// the broker, or of the process's own queue (Inline).
func (e *Env) Wait() {
	e.Broker.Wait()
	if e.App.Queue != nil {
		e.App.Queue.Wait()
	}
}

// Janitor fires one janitor run the way a scheduler does and waits for the
// events it caused.
func (e *Env) Janitor(t testing.TB) {
	t.Helper()
	s, err := events.NewSender(e.URL+allinone.JanitorPath, allinone.Client(e.App))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ev, _ := events.New(ctx, "//challfn/test/scheduler", events.TypeKnativePing, map[string]string{})
	if err := s.Send(ctx, ev); err != nil {
		t.Fatalf("janitor: %v", err)
	}
	e.Wait()
}

// Stacks lists the stacks left in the Pulumi backend.
func (e *Env) Stacks(t testing.TB) []string {
	t.Helper()
	refs, err := e.App.Engine.ListStacks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(refs))
	for i, r := range refs {
		out[i] = r.Project + "/" + r.Identity
	}
	return out
}

// Keys lists the etcd keys under the records prefix, locks excluded.
func (e *Env) Keys(t testing.TB) []string {
	t.Helper()
	resp, err := e.Client.Get(context.Background(), e.App.Config.EtcdPrefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if filepath.Base(filepath.Dir(k)) == "lock" || containsSegment(k, "/lock/") || containsSegment(k, "/meta/") {
			continue
		}
		out = append(out, k)
	}
	return out
}
