//go:build linux

package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The tests run the real challfn-sandbox binary, built once, with real kernel
// namespaces; a machine that cannot make them fails the FlavorRoot and FlavorUserNS
// cases (they never skip). FlavorUserNS is tested from a helper process running as
// nobody, the way a non-root function would run.

const helperEnv = "SANDBOX_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	if v := os.Getenv(ownerEnv); v != "" {
		os.Exit(runOwner(v))
	}
	os.Exit(m.Run())
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds challfn-sandbox and copies this test binary into a directory that
// nobody may read (for the FlavorUserNS helper).
func binaries(t *testing.T) (sandboxBin, testBin string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "sandbox-test-bin-")
		if buildErr != nil {
			return
		}
		_ = os.Chmod(buildDir, 0o755)
		cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, BinName), "github.com/challfn/challfn/cmd/challfn-sandbox")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build %s: %w\n%s", BinName, err, out)
			return
		}
		self, err := os.Executable()
		if err != nil {
			buildErr = err
			return
		}
		b, err := os.ReadFile(self)
		if err == nil {
			err = os.WriteFile(filepath.Join(buildDir, "sandbox.test"), b, 0o755)
		}
		buildErr = err
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, BinName), filepath.Join(buildDir, "sandbox.test")
}

// runRequest is what a helper runs: a shell script in a jail.
type runRequest struct {
	Bin, Script string
	Mode        Mode
	ReadOnly    []string
	Hide        []string
	Forward     []string
	Env         []string
}

type runReply struct {
	Result Result
	Out    string
	Err    string
}

// helper runs req in this process: directly as root, or in a child running as nobody.
func helper(t *testing.T, asNobody bool, req runRequest) runReply {
	t.Helper()
	if !asNobody {
		return run(req)
	}
	_, testBin := binaries(t)
	b, _ := json.Marshal(req)
	cmd := exec.Command(testBin)
	cmd.Env = []string{helperEnv + "=" + string(b), "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("helper as nobody: %v\n%s", err, errb.String())
	}
	var rep runReply
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("helper reply: %v\n%s\n%s", err, out.String(), errb.String())
	}
	return rep
}

func runHelper() int {
	// As the language host and the functions are.
	_ = SetUndumpable()
	var req runRequest
	if err := json.Unmarshal([]byte(os.Getenv(helperEnv)), &req); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	b, _ := json.Marshal(run(req))
	os.Stdout.Write(b)
	return 0
}

func run(req runRequest) runReply {
	var out, errb bytes.Buffer
	r := &Runner{Bin: req.Bin, Mode: req.Mode}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := r.Run(ctx, Program{
		Path: "/bin/sh", Args: []string{"-c", req.Script}, Env: append([]string{"PATH=/usr/bin:/bin"}, req.Env...),
		Dir: "/", ReadOnly: req.ReadOnly, Hide: req.Hide, Forward: req.Forward, Stdout: &out, Stderr: &errb,
	})
	rep := runReply{Result: res, Out: out.String(), Err: errb.String()}
	if err != nil {
		rep.Err += "\nRUN ERROR: " + err.Error()
	}
	return rep
}

func marker(t *testing.T) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "challfn-sandbox-test-" + hex.EncodeToString(b)
}

// withMarker lists the processes named m (argv[0], set by `exec -a`): not those whose
// arguments merely hold it (the shell scripts that start them, their supervisor).
func withMarker(m string) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if bytes.HasPrefix(b, []byte(m)) {
			out = append(out, e.Name()+": "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	return out
}

func waitGone(t *testing.T, m string, d time.Duration) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if left = withMarker(m); len(left) == 0 {
			return
		}
	}
	t.Fatalf("processes left: %v", left)
}

// jailFixture is what the program of TestJail probes, owned by the function's uid.
type jailFixture struct {
	secretDir, cache, prog, outside string
}

func newJailFixture(t *testing.T, uid int) jailFixture {
	t.Helper()
	base := t.TempDir()
	// t.TempDir's parent is 0700: the nobody helper must reach its own files.
	_ = os.Chmod(filepath.Dir(base), 0o755)
	_ = os.Chmod(base, 0o755)
	f := jailFixture{
		secretDir: filepath.Join(base, "state"), // stands for the state folder
		cache:     filepath.Join(base, "cache"), // the scenario cache
		outside:   filepath.Join(base, "open", "written-from-the-jail"),
	}
	f.prog = filepath.Join(f.cache, "prog")
	for _, d := range []string{f.secretDir, f.prog, filepath.Dir(f.outside)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	_ = os.Chmod(f.prog, 0o755)
	_ = os.Chmod(filepath.Dir(f.outside), 0o777)
	for name, content := range map[string]string{
		filepath.Join(f.secretDir, "state.json"): "FLAG-of-another-stack",
		filepath.Join(f.prog, "data.txt"):        "my-own-file",
		filepath.Join(f.cache, "other.txt"):      "other-scenario",
	} {
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_ = filepath.Walk(base, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, uid, uid) })
	return f
}

// TestJail: what a program inside each flavor can and cannot do.
func TestJail(t *testing.T) {
	bin, _ := binaries(t)
	// A loopback service the program may reach (forwarded) and one it may not.
	allowed, denied := listen(t, "engine"), listen(t, "etcd")
	for _, tc := range []struct {
		name   string
		nobody bool
		owner  int
		flavor Flavor
		uid    string
	}{
		{"root flavor", false, 0, FlavorRoot, "65534"},
		{"user namespace as nobody", true, 65534, FlavorUserNS, "0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newJailFixture(t, tc.owner)
			script := strings.Join([]string{
				`echo "uid=$(id -u)"`,
				`test -e /proc/` + strconv.Itoa(os.Getpid()) + ` && echo "host-pid=yes" || echo "host-pid=no"`,
				`echo "pid1=$(tr '\0' ' ' < /proc/1/cmdline)"`,
				`cat ` + filepath.Join(f.secretDir, "state.json") + ` >/dev/null 2>&1 && echo "read-state=yes" || echo "read-state=no"`,
				`ls ` + f.secretDir + ` >/dev/null 2>&1 && echo "list-state=yes" || echo "list-state=no"`,
				`cat ` + filepath.Join(f.prog, "data.txt") + ` >/dev/null 2>&1 && echo "read-own=yes" || echo "read-own=no"`,
				`cat ` + filepath.Join(f.cache, "other.txt") + ` >/dev/null 2>&1 && echo "read-other=yes" || echo "read-other=no"`,
				`touch ` + f.outside + ` 2>/dev/null && echo "write-outside=yes" || echo "write-outside=no"`,
				`touch ` + filepath.Join(f.prog, "x") + ` 2>/dev/null && echo "write-own=yes" || echo "write-own=no"`,
				`head -c 8388608 /dev/zero > /tmp/x 2>/dev/null && echo "write-tmp=yes" || echo "write-tmp=no"`,
				`touch /usr/x 2>/dev/null && echo "write-usr=yes" || echo "write-usr=no"`,
				`echo "hostname=$(cat /proc/sys/kernel/hostname)"`,
				`echo "caps=$(grep CapEff /proc/self/status | tr -d '\t')"`,
				`echo "nnp=$(grep NoNewPrivs /proc/self/status | tr -d '\t')"`,
				dial(allowed, "engine"),
				dial(denied, "etcd"),
			}, "\n")
			rep := helper(t, tc.nobody, runRequest{
				Bin: bin, Script: script, Mode: Require,
				// /tmp stands for the work directories' parent: the jail's own /tmp stays.
				ReadOnly: []string{f.prog}, Hide: []string{f.cache, f.secretDir, "/tmp"},
				Forward: []string{allowed},
			})
			if rep.Result.Flavor != tc.flavor || rep.Result.Code != 0 {
				t.Fatalf("result %+v\nstdout:\n%s\nstderr:\n%s", rep.Result, rep.Out, rep.Err)
			}
			for _, w := range []string{
				"uid=" + tc.uid, "host-pid=no", "pid1=" + bin + " jail ", "read-state=no", "list-state=no",
				"read-own=yes", "read-other=no", "write-outside=no", "write-own=no",
				"write-tmp=yes", "write-usr=no", "hostname=scenario", "caps=CapEff:0000000000000000",
				"nnp=NoNewPrivs:1", "dial-engine=yes", "dial-etcd=no",
			} {
				if !containsLine(rep.Out, w) {
					t.Errorf("want %q in:\n%s\nstderr:\n%s", w, rep.Out, rep.Err)
				}
			}
			if strings.Contains(rep.Out, "FLAG-of-another-stack") || strings.Contains(rep.Out, "other-scenario") {
				t.Errorf("hidden content read:\n%s", rep.Out)
			}
			if _, err := os.Stat(f.outside); err == nil {
				t.Errorf("the program wrote %s", f.outside)
			}
		})
	}
}

func containsLine(out, line string) bool {
	for _, l := range strings.Split(out, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

// listen serves one line on a loopback port and returns its address.
func listen(t *testing.T, name string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "hello-from-%s\n", name)
			c.Close()
		}
	}()
	return l.Addr().String()
}

// dial is a shell line that connects to addr with bash's /dev/tcp, or with the shell's
// nothing: the image has no nc. The test binary has Go: use it through a tiny helper
// would be heavier; /dev/tcp needs bash.
func dial(addr, name string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`if timeout 3 bash -c 'exec 3<>/dev/tcp/%s/%s && head -1 <&3' 2>/dev/null | grep -q hello-from-%s; then echo "dial-%s=yes"; else echo "dial-%s=no"; fi`, host, port, name, name, name)
}

// TestJailEndsDaemons: whatever the program leaves running, setsid or double fork, is
// killed when it exits, in every flavor.
func TestJailEndsDaemons(t *testing.T) {
	bin, _ := binaries(t)
	for _, tc := range []struct {
		name   string
		nobody bool
		mode   Mode
		flavor Flavor
	}{
		{"root flavor", false, Require, FlavorRoot},
		{"user namespace as nobody", true, Require, FlavorUserNS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := marker(t)
			script := fmt.Sprintf(`setsid bash -c 'exec -a %s sleep 3600' </dev/null >/dev/null 2>&1 &
(bash -c 'exec -a %s-2 sleep 3600' </dev/null >/dev/null 2>&1 &) ; sleep 0.3
echo "daemons=$(grep -l "^%s" /proc/[0-9]*/cmdline 2>/dev/null | wc -l)"`, m, m, m)
			rep := helper(t, tc.nobody, runRequest{Bin: bin, Script: script, Mode: tc.mode})
			if rep.Result.Flavor != tc.flavor || !containsLine(rep.Out, "daemons=2") {
				t.Fatalf("result %+v\n%s\n%s", rep.Result, rep.Out, rep.Err)
			}
			waitGone(t, m, 5*time.Second)
		})
	}
}

// TestPlainEndsDaemons: FlavorNone (no namespace) still ends the program's tree, through
// the process group and the subreaper.
func TestPlainEndsDaemons(t *testing.T) {
	m := marker(t)
	p := Program{
		Path: "/bin/sh", Args: []string{"-c", fmt.Sprintf(`setsid bash -c 'exec -a %s sleep 3600' </dev/null >/dev/null 2>&1 &
(bash -c 'exec -a %s-2 sleep 3600' </dev/null >/dev/null 2>&1 &); sleep 0.3
echo "daemons=$(grep -l "^%s" /proc/[0-9]*/cmdline 2>/dev/null | wc -l)"`, m, m, m)},
		Stderr: io.Discard,
	}
	var out bytes.Buffer
	p.Stdout = &out
	code, err := runPlain(context.Background(), p, true)
	if err != nil || code != 0 || !containsLine(out.String(), "daemons=2") {
		t.Fatalf("runPlain = %d, %v: %s", code, err, out.String())
	}
	waitGone(t, m, 5*time.Second)
}

// TestRequireRefusesNone: with every namespace refused (a runner without the sandbox
// binary), Require fails and Auto falls back to FlavorNone.
func TestRequireRefusesNone(t *testing.T) {
	p := Program{Path: "/bin/true", Stdout: io.Discard, Stderr: io.Discard}
	if _, err := (&Runner{Mode: Require}).Run(context.Background(), p); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("Require without a jail: %v", err)
	}
	res, err := (&Runner{Mode: Auto}).Run(context.Background(), p)
	if err != nil || res.Flavor != FlavorNone || res.Degraded == "" {
		t.Fatalf("Auto without a jail: %+v, %v", res, err)
	}
}

// treeScript starts, under the engine, what the supervisor must end (a background child
// and a double-forked one, both in the engine's session) and what it must leave (a
// process in a session of its own: a deployed resource), then becomes the engine itself
// (m-engine) or exits with 7.
func treeScript(m string, exit bool) string {
	end := fmt.Sprintf(`exec bash -c 'exec -a %s-engine sleep 3600'`, m)
	if exit {
		end = "exit 7"
	}
	return fmt.Sprintf(`bash -c 'exec -a %s-child sleep 3600' </dev/null >/dev/null 2>&1 &
(bash -c 'exec -a %s-orphan sleep 3600' </dev/null >/dev/null 2>&1 &)
setsid bash -c 'exec -a %s-resource sleep 3600' </dev/null >/dev/null 2>&1 &
sleep 0.3
%s`, m, m, m, end)
}

// wantTreeEnded waits until m's engine, child and orphan are gone, and checks that its
// resource is still there (then kills it).
func wantTreeEnded(t *testing.T, m string) {
	t.Helper()
	for _, part := range []string{"-engine", "-child", "-orphan"} {
		waitGone(t, m+part, 5*time.Second)
	}
	left := withMarker(m + "-resource")
	if len(left) != 1 {
		t.Errorf("the process in a session of its own should be left alone: %v", left)
	}
	for _, l := range left {
		pid, _ := strconv.Atoi(strings.SplitN(l, ":", 2)[0])
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// TestSupervisor: the supervisor ends the engine's whole tree when the engine exits,
// when told to, and when its owner dies (kill -9 or SIGTERM of the owner's process
// group), and leaves a provider's deployed resource (a session of its own) alone.
func TestSupervisor(t *testing.T) {
	bin, _ := binaries(t)
	t.Run("engine exits", func(t *testing.T) {
		m := marker(t)
		s, err := Supervise(bin, exec.Command("/bin/sh", "-c", treeScript(m, true)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		if err := s.Wait(); exitStatus(err) != 7 {
			t.Fatalf("supervisor exit: %v, want the engine's 7", err)
		}
		wantTreeEnded(t, m)
	})
	t.Run("terminate", func(t *testing.T) {
		m := marker(t)
		s, err := Supervise(bin, exec.Command("/bin/sh", "-c", treeScript(m, false)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, m+"-engine")
		s.Terminate()
		done := make(chan error, 1)
		go func() { done <- s.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("supervisor did not exit after Terminate")
		}
		wantTreeEnded(t, m)
	})
	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		t.Run("owner killed with "+sig.String(), func(t *testing.T) {
			m := marker(t)
			// The owner is another process (runOwner), so that it can be killed.
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), ownerEnv+"="+bin+"|"+m)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
			// A supervisor that outlives its owner holds the output pipes: fail, not hang.
			cmd.WaitDelay = 2 * time.Second
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, m+"-engine")
			waitFor(t, m+"-orphan")
			// The whole process group of the owner, as a container kill or the fault
			// tests do.
			_ = syscall.Kill(-cmd.Process.Pid, sig)
			_ = cmd.Wait()
			wantTreeEnded(t, m)
		})
	}
}

// ownerEnv makes the test binary the owner process of TestSupervisor: it supervises a
// shell that leaves a daemon and waits, until it is killed.
const ownerEnv = "SANDBOX_TEST_OWNER"

func runOwner(v string) int {
	bin, m, _ := strings.Cut(v, "|")
	cmd := exec.Command("/bin/sh", "-c", treeScript(m, false))
	s, err := Supervise(bin, cmd)
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = s.Wait()
	return 0
}

func waitFor(t *testing.T, m string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if len(withMarker(m)) > 0 {
			return
		}
	}
	t.Fatalf("no process %s", m)
}
