package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/sandbox"
)

// Figures of issue 14. Nothing is asserted; run with
//
//	go test ./e2e -run '^$' -bench 'GRPCvsREST' -benchtime=2000x
//	go test ./e2e -run '^$' -bench 'CLICreate' -benchtime=5x

// BenchmarkGRPCvsREST: latency of retrieve and renew of one instance over
// REST (HTTP/1.1 keep-alive) and over gRPC (one h2c connection), the four
// calls interleaved in every iteration so that both transports see the same
// machine load. Reported: p50/p99 of each, in ms.
func BenchmarkGRPCvsREST(b *testing.B) {
	env := testenv.Start(b, testenv.Options{Events: testenv.Inline})
	conn := gcDial(b, env)
	lcCreateChallenge(b, env, `{"id":"bench","scenario":"`+env.Scenario(b, "outputs")+`","timeout":"3600s"}`)
	lcCreateInstance(b, env, "bench", "s")
	var restGet, grpcGet, restRenew, grpcRenew ctLatencies
	timed := func(l *ctLatencies, f func() error) {
		start := time.Now()
		if err := f(); err != nil {
			b.Fatal(err)
		}
		l.add(time.Since(start))
	}
	rest := func(method, path, body string) func() error {
		return func() error {
			if r := do(b, env.URL, method, path, body); r.Status != http.StatusOK {
				return fmt.Errorf("%s %s: %d %s", method, path, r.Status, r.Body)
			}
			return nil
		}
	}
	grpcCall := func(method string, req any) func() error {
		return func() error { _, err := gcCall[api.Instance](conn, method, req); return err }
	}
	id := &api.RetrieveInstanceRequest{ChallengeID: "bench", SourceID: "s"}
	renew := &api.RenewInstanceRequest{ChallengeID: "bench", SourceID: "s"}
	// Warm both connections.
	_ = rest("GET", "/api/v1/instance/bench/s", "")()
	_ = grpcCall(gcInstance+"RetrieveInstance", id)()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		timed(&restGet, rest("GET", "/api/v1/instance/bench/s", ""))
		timed(&grpcGet, grpcCall(gcInstance+"RetrieveInstance", id))
		timed(&restRenew, rest("PATCH", "/api/v1/instance/bench/s", "{}"))
		timed(&grpcRenew, grpcCall(gcInstance+"RenewInstance", renew))
	}
	b.StopTimer()
	for _, m := range []struct {
		name string
		l    *ctLatencies
	}{{"rest-retrieve", &restGet}, {"grpc-retrieve", &grpcGet}, {"rest-renew", &restRenew}, {"grpc-renew", &grpcRenew}} {
		b.ReportMetric(ms(m.l.percentile(50)), m.name+"-p50-ms")
		b.ReportMetric(ms(m.l.percentile(99)), m.name+"-p99-ms")
	}
}

// upDuration is the server call time the CLI prints ("Duration: 1.2s").
var upDuration = regexp.MustCompile(`(?m)^Duration: (\S+)$`)

// BenchmarkCLICreate: wall time of chall-manager-cli (the real v0.6.6
// binary, process start to exit, as a ChallMaker's terminal sees it) for a
// challenge create and an instance create, against challfn's local run and
// against chall-manager v0.6.6's own server (its local locks, a file://
// Pulumi backend, the same engine and language host, the same registry and
// scenario), interleaved. The first challenge of each is created untimed
// (both compile the scenario once per digest); every iteration then
// registers a new challenge and deploys a new instance (no pool).
// Reported: p50 of each, in ms, and the server-side call time of the creates
// as the CLI prints it.
func BenchmarkCLICreate(b *testing.B) {
	env := testenv.Start(b, testenv.Options{})
	cli := testenv.ChallManager(b, "chall-manager-cli")
	ref := env.Scenario(b, "outputs")
	targets := []struct{ name, url string }{
		{"challfn", gcTarget(env)},
		{"chall-manager", upStartServer(b, testenv.ChallManager(b, "chall-manager")).Target},
	}
	type figures struct{ chWall, chCall, inWall, inCall ctLatencies }
	got := map[string]*figures{}
	run := func(url string, args ...string) (wall, call time.Duration, out string) {
		start := time.Now()
		out = upRun(b, nil, cli, append([]string{args[0], "--url=" + url}, args[1:]...)...)
		wall = time.Since(start)
		if m := upDuration.FindStringSubmatch(out); m != nil {
			call, _ = time.ParseDuration(m[1])
		}
		if !strings.Contains(out, "[+]") {
			b.Fatalf("%s %v: %s", url, args, out)
		}
		return wall, call, out
	}
	for _, tg := range targets {
		got[tg.name] = &figures{}
		wall, _, _ := run(tg.url, "challenge", "create", "--id", "warm", "--scenario", ref, "--timeout", "1h")
		b.Logf("%s: first challenge create (scenario compiled) %v", tg.name, wall.Round(time.Millisecond))
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, tg := range targets {
			f := got[tg.name]
			w, c, _ := run(tg.url, "challenge", "create", "--id", fmt.Sprintf("c%d", i), "--scenario", ref, "--timeout", "1h")
			f.chWall.add(w)
			f.chCall.add(c)
			w, c, _ = run(tg.url, "instance", "create", "--challenge_id", "warm", "--source_id", fmt.Sprintf("s%d", i))
			f.inWall.add(w)
			f.inCall.add(c)
		}
	}
	b.StopTimer()
	for _, tg := range targets {
		f := got[tg.name]
		b.ReportMetric(ms(f.chWall.percentile(50)), tg.name+"-challenge-wall-p50-ms")
		b.ReportMetric(ms(f.chCall.percentile(50)), tg.name+"-challenge-call-p50-ms")
		b.ReportMetric(ms(f.inWall.percentile(50)), tg.name+"-instance-wall-p50-ms")
		b.ReportMetric(ms(f.inCall.percentile(50)), tg.name+"-instance-call-p50-ms")
	}
}

// upServer is a running chall-manager: its gRPC and REST address, and its
// pid (also its process group: the engines it starts are in it).
type upServer struct {
	Target string
	Pid    int
}

// upStartServer runs chall-manager v0.6.6's server (cmd/chall-manager) with
// its local locks (no etcd), a file:// Pulumi backend and the engine and
// language host of .bin, on a free port, and returns its gRPC target. It has
// no listen-address flag: it binds every interface, loopback is what it is
// called on.
func upStartServer(b *testing.B, bin string) upServer {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	dir := b.TempDir()
	for _, d := range []string{"state", "pulumi-home", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "--port", port, "--dir", filepath.Join(dir, "data"), "--cache", filepath.Join(dir, "cache"),
		"--oci.insecure", "--log-level", "warn")
	cmd.Env = append(os.Environ(),
		"PULUMI_BACKEND_URL=file://"+filepath.Join(dir, "state"),
		"PULUMI_HOME="+filepath.Join(dir, "pulumi-home"),
		"PULUMI_SKIP_UPDATE_CHECK=true",
		// Its telemetry exports to nothing (metrics keep trying loopback:4317).
		"OTEL_TRACES_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
		// Our language host runs its programs unjailed: chall-manager keeps
		// them in folders of its own (0700) that the jail's uid cannot enter.
		// challfn keeps its jail: the comparison charges it the containment.
		sandbox.EnvMode+"="+string(sandbox.Off),
	)
	logf, err := os.Create(filepath.Join(dir, "chall-manager.log"))
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		logf.Close()
	})
	url := "127.0.0.1:" + port
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + url + "/healthcheck")
		if err == nil {
			resp.Body.Close()
			return upServer{Target: url, Pid: cmd.Process.Pid}
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(logf.Name())
			b.Fatalf("chall-manager did not start: %v\n%s", err, raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
