package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/internal/registry"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/store"
)

// Helpers of the fault-injection tests (faults_test.go). Names start with
// "flt". A fault test runs challfn as real processes (internal/testserver),
// killed, frozen and restarted like the platform does to function instances,
// sharing one etcd, one file:// Pulumi backend and one scenario store.

var (
	fltBinOnce sync.Once
	fltBin     string
	fltBinErr  error
)

// fltServerBin builds internal/testserver once per test binary.
func fltServerBin(t testing.TB) string {
	t.Helper()
	fltBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "challfn-testserver-")
		if err != nil {
			fltBinErr = err
			return
		}
		// Readable by every uid: a function process may run as another user (fltShared.UID).
		_ = os.Chmod(dir, 0o755)
		fltBin = filepath.Join(dir, "testserver")
		cmd := exec.Command("go", "build", "-o", fltBin, "./internal/testserver")
		cmd.Dir = testenv.Root()
		if out, err := cmd.CombinedOutput(); err != nil {
			fltBinErr = fmt.Errorf("building testserver: %w\n%s", err, out)
		}
	})
	if fltBinErr != nil {
		t.Fatal(fltBinErr)
	}
	return fltBin
}

// fltShared is what the function processes of one test share.
type fltShared struct {
	Endpoints []string
	Dir       string // state/ (Pulumi backend), scenarios/ (compiled scenarios)
	Registry  *registry.Server
	Cli       *clientv3.Client
	Engine    *iac.Engine // a client of the backend, for listing stacks
	Store     *store.Store
	Env       map[string]string // extra variables of every process
	// UID, when not 0, is the user (and group) the function processes run as, as in the
	// images (65532); the test makes the shared folders theirs.
	UID int
}

// fltSetup makes the shared parts around endpoints (an etcd the caller runs).
func fltSetup(t testing.TB, endpoints []string) *fltShared {
	t.Helper()
	testenv.Install(t)
	fltServerBin(t)
	s := &fltShared{Endpoints: endpoints, Dir: t.TempDir()}
	for _, d := range []string{"state", "scenarios"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	reg, err := registry.Start(context.Background(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	s.Registry = reg
	cli, err := etcd.Connect(context.Background(), etcd.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	s.Cli = cli
	s.Store = store.New(cli, "/challfn")
	s.Engine, err = iac.New(iac.Config{
		PulumiBin:  filepath.Join(testenv.Root(), ".bin", "pulumi"),
		BackendURL: "file://" + filepath.Join(s.Dir, "state"),
		Passphrase: "challfn-test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fltProc is one function process.
type fltProc struct {
	URL  string
	cmd  *exec.Cmd
	log  *fltLog
	done chan struct{}
	t    testing.TB
	// owner marks the environment of the process and, inherited, of every process it
	// starts (engine, supervisor, language host, providers, programs): fltOwned finds
	// them all.
	owner string
}

type fltLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *fltLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *fltLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// fltStart starts a function process (own process group, so that a kill
// takes its Pulumi engine processes with it, as a container kill does).
func fltStart(t testing.TB, s *fltShared, extra map[string]string) *fltProc {
	t.Helper()
	vars := allinone.Vars(s.Dir, strings.Join(s.Endpoints, ","))
	for k, v := range map[string]string{
		"PULUMI_CONFIG_PASSPHRASE": "challfn-test",
		"CACHE_DIR":                filepath.Join(t.TempDir(), "cache"),
		"CHALLFN_PULUMI":           filepath.Join(testenv.Root(), ".bin", "pulumi"),
		"LOCK_TTL":                 "2s",
		"JANITOR_ORPHAN_GRACE":     "1s",
		"DEPLOY_TIMEOUT":           "8s",
		"PULUMI_SKIP_UPDATE_CHECK": "true",
		"PATH":                     filepath.Join(testenv.Root(), ".bin") + string(os.PathListSeparator) + os.Getenv("PATH"),
		"HOME":                     os.Getenv("HOME"),
		"TMPDIR":                   os.TempDir(),
	} {
		vars[k] = v
	}
	delete(vars, "EVENTS_SINK_URL") // TESTSERVER_EVENTS chooses
	owner := fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), time.Now().UnixNano())
	vars[fltOwnerEnv] = owner
	for k, v := range s.Env {
		vars[k] = v
	}
	for k, v := range extra {
		vars[k] = v
	}
	cmd := exec.Command(fltServerBin(t))
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if s.UID != 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.UID), Gid: uint32(s.UID)}
	}
	p := &fltProc{cmd: cmd, log: &fltLog{}, done: make(chan struct{}), t: t, owner: owner}
	cmd.Stderr = p.log
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("log of %s:\n%s", p.URL, fltTail(p.log.String(), 4000))
		}
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "LISTEN "); ok {
				urls <- u
			}
		}
	}()
	select {
	case p.URL = <-urls:
	case <-p.done:
		t.Fatalf("testserver exited: %s", p.log.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("testserver not listening after 60s: %s", p.log.String())
	}
	return p
}

func fltTail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Kill is kill -9 of the process' group, as a container kill does to a function
// instance. Every process the function started, directly or not (engine, supervisor,
// language host, providers, programs and their children), must be gone soon after
// (issue 11): a leftover fails the test.
func (p *fltProc) Kill() time.Duration { return p.end(-p.cmd.Process.Pid, syscall.SIGKILL) }

// Term is SIGTERM to the function process alone, as the platform sends before stopping
// an instance; the same must follow as for Kill.
func (p *fltProc) Term() time.Duration { return p.end(p.cmd.Process.Pid, syscall.SIGTERM) }

// KillAlone is kill -9 of the function process alone (not its group).
func (p *fltProc) KillAlone() time.Duration { return p.end(p.cmd.Process.Pid, syscall.SIGKILL) }

// end sends sig to target and returns how long it took until the function process and
// every process of its tree were gone.
func (p *fltProc) end(target int, sig syscall.Signal) time.Duration {
	if p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0 // ended before
	default:
	}
	before := fltTree(p.cmd.Process.Pid, p.owner)
	start := time.Now()
	_ = syscall.Kill(target, sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		p.t.Errorf("function process did not exit after %s", sig)
	}
	left := fltOutlived(before, p.owner, 15*time.Second)
	took := time.Since(start)
	if len(left) > 0 {
		p.t.Errorf("after %s of the function process, its processes outlived it: %v", sig, left)
		for _, q := range left {
			_ = syscall.Kill(q.pid, syscall.SIGKILL)
		}
	}
	return took
}

// fltOwnerEnv marks every process of a function process' tree (see fltProc.owner).
const fltOwnerEnv = "CHALLFN_TEST_OWNER"

// fltPS is a process as /proc showed it.
type fltPS struct {
	pid, ppid, session int
	start              string // start time: a recycled pid is another process
	desc               string
}

func (q fltPS) String() string { return fmt.Sprintf("%d %s", q.pid, q.desc) }

// fltProcs reads every process of the machine.
func fltProcs() map[int]fltPS {
	out := map[int]fltPS{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 20 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		sid, _ := strconv.Atoi(f[3])
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		out[pid] = fltPS{pid: pid, ppid: ppid, session: sid, start: f[19], desc: strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))}
	}
	return out
}

// fltTree lists the processes of the function process root: its descendants in its
// session (the engine's tree, the jails' inits and programs), and every process that
// carries the owner mark (a program's daemon in a session of its own carries it too).
// A deployed resource (a provider's Service, in a session of its own, started without
// the environment) is not one of them.
func fltTree(root int, owner string) []fltPS {
	all := fltProcs()
	sid := all[root].session
	children := map[int][]int{}
	for pid, q := range all {
		children[q.ppid] = append(children[q.ppid], pid)
	}
	seen := map[int]bool{}
	var out []fltPS
	var walk func(int)
	walk = func(p int) {
		for _, c := range children[p] {
			if q := all[c]; !seen[c] && q.session == sid {
				seen[c] = true
				out = append(out, q)
				walk(c)
			}
		}
	}
	walk(root)
	mark := []byte(fltOwnerEnv + "=" + owner + "\x00")
	for pid, q := range all {
		if seen[pid] || pid == root {
			continue
		}
		if env, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ"); err == nil && bytes.Contains(env, mark) {
			seen[pid] = true
			out = append(out, q)
			walk(pid)
		}
	}
	return out
}

// fltOutlived waits up to d for every process of before, and every process with the
// owner mark, to be gone, and returns those still there.
func fltOutlived(before []fltPS, owner string, d time.Duration) []fltPS {
	var left []fltPS
	for deadline := time.Now().Add(d); ; time.Sleep(50 * time.Millisecond) {
		all := fltProcs()
		left = left[:0]
		seen := map[int]bool{}
		for _, q := range before {
			if now, ok := all[q.pid]; ok && now.start == q.start {
				left = append(left, q)
				seen[q.pid] = true
			}
		}
		for _, q := range fltTree(-1, owner) {
			if !seen[q.pid] {
				left = append(left, q)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
	}
}

// Stop freezes the function process only (SIGSTOP): its engine processes
// run on, as they would when a platform freezes the request's CPU but an
// already-started child keeps its own.
func (p *fltProc) Stop() { _ = p.cmd.Process.Signal(syscall.SIGSTOP) }

// Cont resumes a frozen process.
func (p *fltProc) Cont() { _ = p.cmd.Process.Signal(syscall.SIGCONT) }

// fltKeys lists the keys under /challfn/<sub>.
func fltKeys(t testing.TB, s *fltShared, sub string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.Cli.Get(ctx, "/challfn/"+sub, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Key))
	}
	return out
}

// fltWaitKey returns once a key under /challfn/<prefix> is put (or was
// already there).
func fltWaitKey(t testing.TB, s *fltShared, prefix string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	key := "/challfn/" + prefix
	resp, err := s.Cli.Get(ctx, key, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) > 0 {
		return string(resp.Kvs[0].Key)
	}
	for wr := range s.Cli.Watch(ctx, key, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1), clientv3.WithFilterDelete()) {
		for _, ev := range wr.Events {
			return string(ev.Kv.Key)
		}
	}
	t.Fatalf("no key under %s after %s", key, timeout)
	return ""
}

// fltWaitGone returns how long it took until no key is left under
// /challfn/<prefix>.
func fltWaitGone(t testing.TB, s *fltShared, prefix string, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < timeout {
		if len(fltKeys(t, s, prefix)) == 0 {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("keys under /challfn/%s still there after %s: %v", prefix, timeout, fltKeys(t, s, prefix))
	return 0
}

// fltPulumiLocks lists the engine's stack lock files in the backend.
func fltPulumiLocks(s *fltShared) []string { return engineLocks(s.Dir) }

// engineLocks lists the stack lock files of the file:// backend in
// dir/state.
func engineLocks(dir string) []string {
	var out []string
	root := filepath.Join(dir, "state", ".pulumi", "locks")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		// Only finished lock files: a .tmp is a write cut short, which the
		// engine does not take for a lock.
		if err == nil && !d.IsDir() && strings.HasSuffix(path, ".json") {
			out = append(out, path)
		}
		return nil
	})
	return out
}

// fltWaitPulumiLock returns once n engine operations hold a stack lock
// that is not in before: the engines are then mid-operation.
func fltWaitPulumiLock(t testing.TB, s *fltShared, before []string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		fresh := 0
		for _, l := range fltPulumiLocks(s) {
			if !slices.Contains(before, l) {
				fresh++
			}
		}
		if fresh >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%d engine operations not started within %s", n, timeout)
}

// fltRepair fires janitor runs on p until every stack has its record (the
// leaks of killed operations repaired) and returns how long that took.
func fltRepair(t testing.TB, s *fltShared, p *fltProc, timeout time.Duration) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	for runs := 1; ; runs++ {
		fltJanitor(t, p)
		// An engine killed during `stack init` leaves a lock without a
		// stack: the janitor deletes it once it is stale.
		if slices.Equal(fltRecords(t, s), fltStacks(t, s)) && len(fltPulumiLocks(s)) == 0 {
			return time.Since(start), runs
		}
		if time.Since(start) > timeout {
			t.Fatalf("janitor did not repair within %s: records %v, stacks %v, engine locks %v", timeout, fltRecords(t, s), fltStacks(t, s), fltPulumiLocks(s))
		}
		time.Sleep(time.Second)
	}
}

// fltStacks lists the backend's stacks as project/identity, sorted.
func fltStacks(t testing.TB, s *fltShared) []string {
	t.Helper()
	refs, err := s.Engine.ListStacks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.Project+"/"+r.Identity)
	}
	sort.Strings(out)
	return out
}

// fltRecords lists the instance records as project/identity, sorted.
func fltRecords(t testing.TB, s *fltShared) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := s.Cli.Get(ctx, "/challfn/inst/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, kv := range resp.Kvs {
		var in struct{ Project, Identity string }
		if err := json.Unmarshal(kv.Value, &in); err != nil {
			t.Fatalf("record %s: %v", kv.Key, err)
		}
		out = append(out, in.Project+"/"+in.Identity)
	}
	sort.Strings(out)
	return out
}

// fltAccounted checks that records, stacks and the instances count agree
// and that nothing lease-bound or locked is left.
func fltAccounted(t testing.TB, s *fltShared) {
	t.Helper()
	recs, stacks := fltRecords(t, s), fltStacks(t, s)
	if !slices.Equal(recs, stacks) {
		t.Errorf("records %v ≠ stacks %v", recs, stacks)
	}
	n, err := s.Store.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int(n.Instances) != len(stacks) {
		t.Errorf("instances count %d, %d stacks", n.Instances, len(stacks))
	}
	for _, sub := range []string{"resv/", "pending/", "lock/"} {
		if k := fltKeys(t, s, sub); len(k) != 0 {
			t.Errorf("left under %s: %v", sub, k)
		}
	}
	if l := fltPulumiLocks(s); len(l) != 0 {
		t.Errorf("engine stack locks left: %v", l)
	}
}

// fltJanitor fires one janitor run on p and waits for its answer.
func fltJanitor(t testing.TB, p *fltProc) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/janitor", strings.NewReader("{}"))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", fmt.Sprint(time.Now().UnixNano()))
	req.Header.Set("Ce-Source", "//challfn/test/scheduler")
	req.Header.Set("Ce-Type", "dev.knative.sources.ping")
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("janitor: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("janitor: %d %s", resp.StatusCode, b)
	}
}

// fltPush pushes scenarios/<name> to the shared registry.
func fltPush(t testing.TB, s *fltShared, name string) string {
	t.Helper()
	env := &testenv.Env{Registry: s.Registry}
	return env.PushDir(t, filepath.Join(testenv.Root(), "scenarios", name), name)
}

// fltWaitKeys returns once n keys exist under /challfn/<prefix>.
func fltWaitKeys(t testing.TB, s *fltShared, prefix string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(fltKeys(t, s, prefix)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d keys under %s after %s, want %d", len(fltKeys(t, s, prefix)), prefix, timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fltJanitorAsync fires a janitor run and ignores the outcome (its process
// is about to be killed).
func fltJanitorAsync(p *fltProc) {
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/janitor", strings.NewReader("{}"))
	req.Header.Set("Ce-Specversion", "1.0")
	req.Header.Set("Ce-Id", fmt.Sprint(time.Now().UnixNano()))
	req.Header.Set("Ce-Source", "//challfn/test/scheduler")
	req.Header.Set("Ce-Type", "dev.knative.sources.ping")
	req.Header.Set("Content-Type", "application/json")
	if resp, err := httpClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// fltLeak makes a stack no record knows (what a crash between the deployment
// and the commit leaves) from challenge cid's scenario.
func fltLeak(t testing.TB, s *fltShared, p *fltProc, cid string) {
	t.Helper()
	_ = p
	c, err := s.Store.GetChallenge(context.Background(), cid)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := fltScenarios(t, s).Get(context.Background(), c.Digest)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Engine.Create(context.Background(), sc.Program, identity.New(), nil); err != nil {
		t.Fatal(err)
	}
}

// fltScenarios reads prepared scenarios from the shared store.
func fltScenarios(t testing.TB, s *fltShared) *scenario.Manager {
	t.Helper()
	m, err := scenario.New(context.Background(), scenario.Config{
		StoreURL: "file://" + filepath.Join(s.Dir, "scenarios"),
		CacheDir: t.TempDir(),
		Registry: scenario.RegistryOptions{PlainHTTP: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}
