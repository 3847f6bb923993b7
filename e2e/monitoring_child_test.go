package e2e

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/challfn/challfn/functions/challenge"
	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/funcmain"
)

// envMonitoringChild makes this test binary serve one function instead of
// running tests: the main of cmd/challfn-<target> (shared/funcmain: telemetry
// set up from OTEL_*, the functions framework serving FUNCTION_TARGET, flush
// and shutdown on SIGTERM), with the same registered functions. The
// monitoring test runs each function in such a process, so each one exports
// under its own service.name and can be frozen on its own.
const envMonitoringChild = "CHALLFN_MONITORING_CHILD"

func init() {
	if target := os.Getenv(envMonitoringChild); target != "" {
		// The HTTP functions' entries, as their cmd/ mains pass them.
		entries := map[string]http.Handler{
			challenge.Name: http.HandlerFunc(challenge.Serve),
			instance.Name:  http.HandlerFunc(instance.Serve),
		}
		funcmain.Run("challfn-"+target, target, entries[target])
		os.Exit(0)
	}
}

// monitoringFunction is one function served by a child process.
type monitoringFunction struct {
	URL  string
	Log  string // path of its stderr (JSON logs)
	cmd  *exec.Cmd
	done chan struct{}
}

// startMonitoringFunction starts target with env (KEY=VALUE) on a free
// loopback port and waits for its health endpoint.
func startMonitoringFunction(t testing.TB, dir, target string, env []string) *monitoringFunction {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	f := &monitoringFunction{URL: "http://127.0.0.1:" + port, Log: filepath.Join(dir, target+"-"+port+".log"), done: make(chan struct{})}
	logf, err := os.Create(f.Log)
	if err != nil {
		t.Fatal(err)
	}
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OTEL_") && !strings.HasPrefix(kv, "K_") {
			base = append(base, kv)
		}
	}
	f.cmd = exec.Command(os.Args[0])
	f.cmd.Env = append(base, append([]string{envMonitoringChild + "=" + target, "PORT=" + port, "LOCAL_ONLY=true", "K_SERVICE=challfn-" + target}, env...)...)
	f.cmd.Stdout, f.cmd.Stderr = logf, logf
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = f.cmd.Wait(); logf.Close(); close(f.done) }()
	t.Cleanup(func() {
		f.signal(syscall.SIGCONT)
		f.signal(syscall.SIGTERM)
		select {
		case <-f.done:
		case <-time.After(10 * time.Second):
			f.signal(syscall.SIGKILL)
			<-f.done
		}
		if t.Failed() {
			raw, _ := os.ReadFile(f.Log)
			t.Logf("--- %s log (tail) ---\n%s", target, tailString(string(raw), 3000))
		}
	})
	monitoringPoll(t, target+" health", 30*time.Second, func() error { return getOK(f.URL + "/healthz") })
	return f
}

// signal sends sig to the process, if it still runs.
func (f *monitoringFunction) signal(sig syscall.Signal) {
	select {
	case <-f.done:
	default:
		_ = f.cmd.Process.Signal(sig)
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// functionEnv is what a function process needs to share env's etcd, Pulumi
// backend and scenario store, followed by extra ("KEY=value").
func functionEnv(env *testenv.Env, extra ...string) []string {
	return append([]string{
		"ETCD_ENDPOINTS=" + env.Etcd.Endpoints()[0],
		"PULUMI_BACKEND_URL=file://" + filepath.Join(env.Dir, "state"),
		"PULUMI_CONFIG_PASSPHRASE=challfn-test",
		"SCENARIO_STORE_URL=file://" + filepath.Join(env.Dir, "scenarios"),
		"OCI_INSECURE=true",
		"CHALLFN_PULUMI=" + filepath.Join(testenv.Root(), ".bin", "pulumi"),
	}, extra...)
}
