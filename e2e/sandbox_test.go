package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/sandbox"
)

// Containment of scenario programs, end to end (issue 15): the attacker scenario
// (scenarios/attacker) is registered and deployed like any other, by the real engine,
// with challfn's credentials in the function's environment, and tries everything a
// hostile scenario would. With the sandbox (SCENARIO_SANDBOX=require) every attempt
// fails; the same attack with SCENARIO_SANDBOX=off succeeds at each (the control: what
// this test would see if the containment broke).

// sbxSecrets are the credentials in the function's environment, as in production.
var sbxSecrets = map[string]string{
	"API_TOKENS":    "api-token-Sb81q",
	"OCI_PASSWORD":  "oci-pass-Wm27z",
	"ETCD_PASSWORD": "etcd-pass-Rk64c",
}

const sbxPassphrase = "passphrase-Yh39t"

// sbxReport is scenarios/attacker's report.
type sbxReport struct {
	UID       int               `json:"uid"`
	Hostname  string            `json:"hostname"`
	Ancestors []string          `json:"ancestors"`
	Environs  map[string]string `json:"environs"`
	FDs       map[string]string `json:"fds"`
	Reads     map[string]string `json:"reads"`
	Walked    []string          `json:"walked"`
	Flags     []string          `json:"flags"`
	Writes    map[string]string `json:"writes"`
	Dials     map[string]string `json:"dials"`
	Etcd      map[string]string `json:"etcd"`
	Registry  map[string]string `json:"registry"`
	Daemons   []string          `json:"daemons"`
	Found     []string          `json:"found"`
	Self      string            `json:"self"`
	StackRef  string            `json:"stackRef"`
}

// sbxAttack is one attack against a function process (internal/testserver) whose
// environment holds challfn's credentials, as in production: a victim instance, then the
// attacker's, told where everything is.
type sbxAttack struct {
	s       *fltShared
	p       *fltProc
	cache   string
	auth    string
	marker  string
	flag    string
	writes  []string
	report  sbxReport
	rawInfo string
	// victimStack is the victim's stack name, for StackReference attempts.
	victimStack string
}

// plugin deploys the attacker in mode "plugin": a resource whose provider is to be
// downloaded from a server of the test's; it returns the answer and how many downloads
// the engine attempted.
func (a *sbxAttack) plugin(t *testing.T) (reply, int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		http.NotFound(w, nil)
	}))
	defer srv.Close()
	body, _ := json.Marshal(map[string]any{"challengeId": "attacker", "sourceId": "plugin", "additional": map[string]string{"mode": "plugin", "plugin": srv.URL}})
	r := do(t, a.p.URL, "POST", "/api/v1/instance", string(body), a.auth)
	return r, hits.Load()
}

// stackRef deploys the attacker in mode "stackref": a StackReference to the victim's
// stack, its outputs exported as connection_info.
func (a *sbxAttack) stackRef(t *testing.T) reply {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"challengeId": "attacker", "sourceId": "ref", "additional": map[string]string{"mode": "stackref", "stackref": a.victimStack}})
	return do(t, a.p.URL, "POST", "/api/v1/instance", string(body), a.auth)
}

// sbxOptions vary the function process of an attack.
type sbxOptions struct {
	// uid, when not 0, runs the function process as that user, with the binaries
	// root's and execute-only as in the images, and a prebuilt attacker (the user
	// has no Go toolchain cache to compile with).
	uid int
}

func sbxRun(t *testing.T, mode sandbox.Mode, opts sbxOptions) *sbxAttack {
	t.Helper()
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	a := &sbxAttack{s: s, cache: filepath.Join(t.TempDir(), "cache"), auth: "Authorization: Bearer " + sbxSecrets["API_TOKENS"], marker: sbxMarker()}
	extra := map[string]string{
		"TESTSERVER_EVENTS":        "inline",
		"PULUMI_CONFIG_PASSPHRASE": sbxPassphrase,
		"SCENARIO_SANDBOX":         string(mode),
		"CACHE_DIR":                a.cache,
	}
	for k, v := range sbxSecrets {
		extra[k] = v
	}
	attacker := func() string { return fltPush(t, s, "attacker") }
	victimRef := func() string { return fltPush(t, s, "outputs") }
	if opts.uid != 0 {
		home := sbxUnprivileged(t, s, opts.uid, extra)
		_ = os.MkdirAll(a.cache, 0o755)
		_ = os.Chown(a.cache, opts.uid, opts.uid)
		for d := filepath.Dir(a.cache); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			_ = os.Chmod(d, 0o755)
		}
		extra["HOME"] = home
		extra["PULUMI_HOME"] = filepath.Join(home, ".pulumi")
		attacker = func() string {
			return (&testenv.Env{Registry: s.Registry}).PushDir(t, sbxPrebuilt(t, "attacker"), "attacker-prebuilt")
		}
		victimRef = func() string {
			return (&testenv.Env{Registry: s.Registry}).PushDir(t, sbxPrebuilt(t, "outputs"), "outputs-prebuilt")
		}
	}
	a.p = fltStart(t, s, extra)
	must := func(method, path, body string) []byte {
		t.Helper()
		r := do(t, a.p.URL, method, path, body, a.auth)
		if r.Status != 200 {
			t.Fatalf("%s %s: %d %s", method, path, r.Status, r.Body)
		}
		return r.Body
	}

	// The victim: another challenge's live instance, whose flag is in the state folder
	// and in etcd.
	must("POST", "/api/v1/challenge", `{"id":"victim","scenario":"`+victimRef()+`"}`)
	var victim struct {
		Flags []string `json:"flags"`
	}
	vb := must("POST", "/api/v1/instance", `{"challengeId":"victim","sourceId":"v"}`)
	if err := json.Unmarshal(vb, &victim); err != nil || len(victim.Flags) == 0 {
		t.Fatalf("victim instance: %v %s", err, vb)
	}
	a.flag = victim.Flags[0]
	identity := strings.TrimSuffix(strings.TrimPrefix(a.flag, "CTF{"), "}")

	state := filepath.Join(s.Dir, "state")
	etcd := strings.TrimPrefix(strings.TrimPrefix(s.Endpoints[0], "http://"), "https://")
	fn, _ := url.Parse(a.p.URL)
	a.writes = []string{filepath.Join(s.Dir, "written-by-attacker"), filepath.Join(os.TempDir(), "written-by-attacker-"+a.marker)}
	additional := map[string]string{
		"mode": "attack",
		"pids": strconv.Itoa(a.p.cmd.Process.Pid),
		"read": strings.Join([]string{
			state, filepath.Join(state, ".pulumi", "stacks", "outputs", identity+".json"),
			a.cache, os.TempDir(), s.Dir,
		}, ","),
		"write":    strings.Join(a.writes, ","),
		"dial":     strings.Join([]string{etcd, s.Registry.Host(), fn.Host}, ","),
		"etcd":     etcd,
		"registry": s.Registry.Host(),
		"marker":   a.marker,
		"stackref": "organization/outputs/" + identity,
	}
	a.victimStack = "organization/outputs/" + identity
	must("POST", "/api/v1/challenge", `{"id":"attacker","scenario":"`+attacker()+`"}`)
	body, _ := json.Marshal(map[string]any{"challengeId": "attacker", "sourceId": "a", "additional": additional})
	var in struct {
		ConnectionInfo string `json:"connectionInfo"`
	}
	if err := json.Unmarshal(must("POST", "/api/v1/instance", string(body)), &in); err != nil {
		t.Fatal(err)
	}
	a.rawInfo = in.ConnectionInfo
	if err := json.Unmarshal([]byte(in.ConnectionInfo), &a.report); err != nil {
		t.Fatalf("the attacker's report is unreadable (%v): %s", err, in.ConnectionInfo)
	}
	t.Cleanup(func() {
		for _, p := range sbxMarked(a.marker) {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		if mode == sandbox.Off {
			// Without containment the escaped daemons would fail the fault helpers'
			// check when the function process ends (fltProc.Kill): they are the control.
			for _, q := range fltTree(-1, a.p.owner) {
				if q.pid != a.p.cmd.Process.Pid && q.session != fltProcs()[a.p.cmd.Process.Pid].session {
					_ = syscall.Kill(q.pid, syscall.SIGKILL)
				}
			}
		}
		for _, w := range a.writes {
			_ = os.Remove(w)
		}
	})
	return a
}

// flavor reads the jail flavor the function process logged at start.
func (a *sbxAttack) flavor() string {
	_, rest, _ := strings.Cut(a.p.log.String(), "sandbox.flavor=")
	f, _, _ := strings.Cut(rest, " ")
	return f
}

// sbxMarked lists the processes whose command line holds m.
func sbxMarked(m string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline"); bytes.Contains(b, []byte(m)) {
			out = append(out, pid)
		}
	}
	return out
}

func sbxMarker() string { return fmt.Sprintf("attacker-daemon-%d", time.Now().UnixNano()) }

func sbxFailed(outcome string) bool { return strings.HasPrefix(outcome, "error: ") }

func TestSandboxAttacker(t *testing.T) {
	sbxAttackFails(t, sbxRun(t, sandbox.Require, sbxOptions{}), "")
}

// TestSandboxAttackerUnprivileged is TestSandboxAttacker with the function process run
// unprivileged, as the images run on Knative (where the kernel and the runtime allow
// user namespaces): FlavorUserNS, the binaries root's and execute-only. The uid is
// nobody's: the images' 65532 has no entry in this machine's /etc/passwd, and the engine
// names the user in its stack locks.
func TestSandboxAttackerUnprivileged(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the function as another user; TestSandboxAttacker runs unprivileged already")
	}
	sbxAttackFails(t, sbxRun(t, sandbox.Require, sbxOptions{uid: 65534}), sandbox.FlavorUserNS)
}

// sbxUnprivileged prepares what a function process of uid needs: the shared folders its
// own, the binaries in a folder of their own, root's and execute-only (0711) as in the
// images. It sets CHALLFN_PULUMI and PATH in extra and returns a HOME.
func sbxUnprivileged(t *testing.T, s *fltShared, uid int, extra map[string]string) string {
	t.Helper()
	s.UID = uid
	_ = filepath.Walk(s.Dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, uid) })
	// t.TempDir's parents are 0700.
	for d := s.Dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		_ = os.Chmod(d, 0o755)
	}
	bin := t.TempDir()
	_ = os.Chmod(bin, 0o755)
	_ = os.Chmod(filepath.Dir(bin), 0o755)
	for _, name := range []string{"pulumi", "pulumi-language-go", "challfn-sandbox", "pulumi-resource-challfn-local"} {
		b, err := os.ReadFile(filepath.Join(testenv.Root(), ".bin", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bin, name), b, 0o711); err != nil {
			t.Fatal(err)
		}
		_ = os.Chmod(filepath.Join(bin, name), 0o711)
	}
	extra["CHALLFN_PULUMI"] = filepath.Join(bin, "pulumi")
	extra["PATH"] = bin + string(os.PathListSeparator) + "/usr/local/bin:/usr/bin:/bin"
	home := filepath.Join(filepath.Dir(bin), "home")
	if err := os.MkdirAll(home, 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.Chown(home, uid, uid)
	return home
}

// sbxPrebuilt builds scenarios/<name> (project name) into a prebuilt scenario folder.
func sbxPrebuilt(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "main"), ".")
	cmd.Dir = filepath.Join(testenv.Root(), "scenarios", name)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the attacker: %v\n%s", err, out)
	}
	project := "name: " + name + "\nruntime:\n  name: go\n  options:\n    binary: ./main\n"
	if err := os.WriteFile(filepath.Join(dir, "Pulumi.yaml"), []byte(project), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// sbxAttackFails checks that every attempt of the attack failed; want, when set, is the
// flavor the jail must have.
func sbxAttackFails(t *testing.T, a *sbxAttack, want sandbox.Flavor) {
	t.Helper()
	r := a.report
	flavor := sandbox.Flavor(a.flavor())
	if flavor != sandbox.FlavorRoot && flavor != sandbox.FlavorUserNS || (want != "" && flavor != want) {
		t.Fatalf("SCENARIO_SANDBOX=require ran with flavor %q:\n%s", flavor, a.p.log.String())
	}
	t.Logf("flavor %s; the attacker ran as uid %d on host %q, ancestors %v", flavor, r.UID, r.Hostname, r.Ancestors)

	// 1. No secret reachable: environment, ancestors' /proc, files, descriptors.
	secrets := []string{sbxPassphrase, a.flag}
	for _, v := range sbxSecrets {
		secrets = append(secrets, v)
	}
	secNoneOf(t, "the attacker's report", a.rawInfo, secrets...)
	if len(r.Found) != 0 {
		t.Errorf("credentials found: %v", r.Found)
	}
	if !slices.Equal(r.Ancestors, []string{"1"}) {
		t.Errorf("ancestors %v: the jail's init should be the only one", r.Ancestors)
	}
	if got := r.Environs[strconv.Itoa(a.p.cmd.Process.Pid)]; !sbxFailed(got) {
		t.Errorf("the function's environ: %q", got)
	}
	if flavor == sandbox.FlavorRoot && r.UID != sandbox.ProgramUID {
		t.Errorf("program uid %d, want %d", r.UID, sandbox.ProgramUID)
	}
	if r.Hostname != "scenario" {
		t.Errorf("hostname %q: not the jail's", r.Hostname)
	}

	// 2. No other stack reachable: the state folder, the victim's checkpoint and the
	// function's folder do not exist for the program; in the scenario cache and the
	// machine's temporary folder (the work directories) it finds only the way to its own
	// folder (made for it in its private /tmp) and its own files.
	state := filepath.Join(a.s.Dir, "state")
	for _, p := range []string{state, a.s.Dir} {
		if o := r.Reads[p]; !sbxFailed(o) {
			t.Errorf("read %s: %s", p, o)
		}
	}
	for p, o := range r.Reads {
		if strings.HasPrefix(p, state) && !sbxFailed(o) {
			t.Errorf("read %s: %s", p, o)
		}
	}
	own := filepath.Dir(r.Self)
	for _, w := range r.Walked {
		if !strings.HasPrefix(own+"/", w+"/") && !strings.HasPrefix(w, own+"/") && w != own {
			t.Errorf("walked %s: neither its own folder %s nor on the way to it", w, own)
		}
	}
	if len(r.Flags) != 0 {
		t.Errorf("flags found: %v", r.Flags)
	}
	for p, o := range r.Writes {
		// Under /tmp the program writes in its own private /tmp: allowed, and not the
		// machine's (checked below).
		if !sbxFailed(o) && !strings.HasPrefix(p, "/tmp/") {
			t.Errorf("write %s: %s", p, o)
		}
	}
	for _, w := range a.writes {
		if _, err := os.Stat(w); err == nil {
			t.Errorf("the attacker wrote %s", w)
		}
	}

	// Through the engine: another stack's outputs, by the builtin function and by a
	// StackReference resource, are refused.
	if !sbxFailed(r.StackRef) || !strings.Contains(r.StackRef, "cannot read other stacks") {
		t.Errorf("readStackOutputs of the victim: %s", r.StackRef)
	}
	if ref := a.stackRef(t); ref.Status == 200 || strings.Contains(string(ref.Body), a.flag) {
		t.Errorf("a StackReference to the victim: %d %s", ref.Status, ref.Body)
	}

	// The engine fetches no provider a scenario names: it would run outside the jail.
	if r, hits := a.plugin(t); r.Status == 200 || hits != 0 {
		t.Errorf("a provider to download: %d %s, %d download attempts", r.Status, r.Body, hits)
	}

	// The network: etcd, the registry and the function itself are out of reach.
	for addr, o := range r.Dials {
		if !sbxFailed(o) {
			t.Errorf("dial %s: %s", addr, o)
		}
	}
	if !sbxFailed(r.Etcd["range"]) || !sbxFailed(r.Registry["push"]) {
		t.Errorf("etcd %q, registry %q", r.Etcd["range"], r.Registry["push"])
	}

	// 3. Nothing outlives the operation: the daemons were started and are gone.
	started := 0
	for _, d := range r.Daemons {
		if !sbxFailed(d) {
			started++
		}
	}
	if started < 2 {
		t.Fatalf("the attacker could not start its daemons: %v", r.Daemons)
	}
	var left []int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if left = sbxMarked(a.marker); len(left) == 0 {
			break
		}
	}
	if len(left) != 0 {
		t.Errorf("daemons outlived the create: %v", left)
	}

	// The instance and the challenge go as usual.
	for _, p := range []string{"/api/v1/instance/attacker/a", "/api/v1/challenge/attacker", "/api/v1/challenge/victim"} {
		if r := do(t, a.p.URL, "DELETE", p, "", a.auth); r.Status != 200 {
			t.Fatalf("DELETE %s: %d %s", p, r.Status, r.Body)
		}
	}
	if s := fltStacks(t, a.s); len(s) != 0 {
		t.Fatalf("stacks left: %v", s)
	}
}

// TestSandboxOffControl is the control of TestSandboxAttacker: without the sandbox the
// same attack succeeds at each step, so each check there can fail.
func TestSandboxOffControl(t *testing.T) {
	a := sbxRun(t, sandbox.Off, sbxOptions{})
	r := a.report
	for _, k := range []string{"PULUMI_CONFIG_PASSPHRASE", "API_TOKENS", "ETCD_PASSWORD", "OCI_PASSWORD"} {
		if !slices.Contains(r.Found, k) {
			t.Errorf("without the sandbox %s should be readable in an ancestor's environ; found %v", k, r.Found)
		}
	}
	if !slices.Contains(r.Flags, a.flag) {
		t.Errorf("without the sandbox the victim's flag %s should be found; flags %v", a.flag, r.Flags)
	}
	if sbxFailed(r.StackRef) || !strings.Contains(r.StackRef, a.flag) {
		t.Errorf("without the sandbox readStackOutputs should give the victim's outputs: %s", r.StackRef)
	}
	if ref := a.stackRef(t); ref.Status != 200 || !strings.Contains(string(ref.Body), a.flag) {
		t.Errorf("without the sandbox a StackReference should give the victim's flag: %d %s", ref.Status, ref.Body)
	}
	if _, hits := a.plugin(t); hits == 0 {
		t.Errorf("without the sandbox the engine should try to download the provider the scenario names")
	}
	if o := r.Reads[filepath.Join(a.s.Dir, "state")]; sbxFailed(o) {
		t.Errorf("without the sandbox the state folder should be readable: %s", o)
	}
	if sbxFailed(r.Etcd["range"]) || sbxFailed(r.Registry["push"]) {
		t.Errorf("without the sandbox etcd (%s) and the registry (%s) should answer", r.Etcd["range"], r.Registry["push"])
	}
	if o := r.Writes[a.writes[0]]; sbxFailed(o) {
		t.Errorf("without the sandbox the write outside should work: %s", o)
	}
	time.Sleep(500 * time.Millisecond)
	if len(sbxMarked(a.marker)) == 0 {
		t.Errorf("without the sandbox the daemons should outlive the create")
	}
	t.Logf("control: credentials found %v, flags %v, etcd %s, registry %s, daemons left %v",
		r.Found, r.Flags, r.Etcd["range"], r.Registry["push"], sbxMarked(a.marker))
}
