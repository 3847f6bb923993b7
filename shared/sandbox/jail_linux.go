//go:build linux

package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Program is one run of a scenario program.
type Program struct {
	Path string   // the executable
	Args []string // arguments, without argv[0]
	Env  []string
	// Dir is the working directory; /tmp (the jail's own) when it is not shown.
	Dir string
	// ReadOnly are the host paths the program may read: its folder, its executable.
	ReadOnly []string
	// Hide are host paths never shown, even under a shown one.
	Hide []string
	// Forward are the loopback TCP addresses (host:port) the program dials: the
	// engine's monitor and engine services. The jail serves each on its own loopback and
	// forwards the connections to the real one.
	Forward []string
	// Serve, when set, answers the connections of the listener serving addr in the jail
	// itself (the language host's engine proxy) instead of Run's plain forwarding. It
	// must return once the listener is closed (when the program has ended).
	Serve func(addr string, l net.Listener)
	// Stdout and Stderr receive the program's output.
	Stdout, Stderr io.Writer
	// TmpBytes caps the program's private /tmp (default 64 MiB).
	TmpBytes int64
}

// Runner runs programs in the strongest jail the machine allows.
type Runner struct {
	Bin  string // challfn-sandbox
	Mode Mode

	mu     sync.Mutex
	flavor Flavor // the one that worked last
	why    []string
}

// Result is how a run ended.
type Result struct {
	Flavor Flavor
	// Code is the program's exit status, 128+n when signal n ended it, -1 when it
	// never started.
	Code int
	// Degraded says why no stronger flavor was used (each refused one and why).
	Degraded string
}

// Run runs p to its end (or ctx's: the jail is then killed). An error means the program
// could not be run as the mode asks.
func (r *Runner) Run(ctx context.Context, p Program) (Result, error) {
	if r.Mode == Off {
		code, err := runPlain(ctx, p, false)
		return Result{Flavor: FlavorNone, Code: code, Degraded: "SCENARIO_SANDBOX=off"}, err
	}
	var refused []string
	for _, f := range r.candidates() {
		var res Result
		var err error
		if f == FlavorNone {
			res.Code, err = runPlain(ctx, p, true)
		} else {
			res.Code, err = r.runJail(ctx, f, p)
		}
		var un *unavailableError
		if errors.As(err, &un) {
			refused = append(refused, fmt.Sprintf("%s: %v", f, un.err))
			r.forget(f, refused)
			continue
		}
		r.remember(f)
		res.Flavor, res.Degraded = f, strings.Join(refused, "; ")
		return res, err
	}
	return Result{Code: -1, Degraded: strings.Join(refused, "; ")}, fmt.Errorf("%w (%s)", ErrUnavailable, strings.Join(refused, "; "))
}

// candidates lists the flavors to try, strongest first, starting from the last one that
// worked (a refused flavor is refused for the life of the process).
func (r *Runner) candidates() []Flavor {
	var fs []Flavor
	if os.Geteuid() == 0 && initialUserNS() {
		fs = append(fs, FlavorRoot)
	}
	fs = append(fs, FlavorUserNS)
	if r.Mode != Require {
		fs = append(fs, FlavorNone)
	}
	r.mu.Lock()
	last := r.flavor
	r.mu.Unlock()
	for i, f := range fs {
		if f == last {
			return fs[i:]
		}
	}
	return fs
}

func (r *Runner) remember(f Flavor) {
	r.mu.Lock()
	r.flavor = f
	r.mu.Unlock()
}

func (r *Runner) forget(f Flavor, why []string) {
	r.mu.Lock()
	if r.flavor == f {
		r.flavor = ""
	}
	r.why = why
	r.mu.Unlock()
}

// initialUserNS tells whether this process is in the machine's first user namespace,
// where uid 0 may map any id.
func initialUserNS() bool {
	b, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) == 3 && f[0] == "0" && f[1] == "0" && f[2] == "4294967295"
}

// unavailableError is a flavor the machine refuses (clone or setup denied).
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }

// runJail runs p under `challfn-sandbox jail` in new namespaces.
func (r *Runner) runJail(ctx context.Context, f Flavor, p Program) (int, error) {
	if r.Bin == "" {
		return -1, &unavailableError{errors.New(BinName + " not found")}
	}
	spec := jailSpec{
		Path: p.Path, Args: append([]string{p.Path}, p.Args...), Env: p.Env,
		ReadOnly: p.ReadOnly, Hide: p.Hide, Forward: p.Forward, UID: -1, GID: -1, TmpBytes: p.TmpBytes,
	}
	spec.Dir = "/tmp"
	if p.Dir != "" && underAny(p.Dir, p.ReadOnly) {
		spec.Dir = p.Dir
	}
	root, err := os.MkdirTemp("", "challfn-jail-")
	if err != nil {
		return -1, fmt.Errorf("sandbox: jail root: %w", err)
	}
	// Mounted on in the jail's mount namespace only: empty here.
	defer os.Remove(root)
	spec.Root = root

	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("sandbox: control socket: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(pair[0]), "control"), os.NewFile(uintptr(pair[1]), "control")
	defer ours.Close()
	specR, specW, err := os.Pipe()
	if err != nil {
		theirs.Close()
		return -1, fmt.Errorf("sandbox: spec pipe: %w", err)
	}

	cmd := exec.Command(r.Bin, "jail")
	cmd.Env = []string{} // the init gets nothing of the host's environment
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	cmd.ExtraFiles = []*os.File{theirs, specR}
	attr := &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS,
		// The jail dies with this host; the thread that forks it is locked below.
		Pdeathsig: syscall.SIGKILL,
	}
	switch f {
	case FlavorRoot:
		spec.UID, spec.GID = ProgramUID, ProgramGID
	case FlavorUserNS:
		attr.Cloneflags |= unix.CLONE_NEWUSER
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	}
	cmd.SysProcAttr = attr

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	err = startDumpable(cmd, f == FlavorUserNS)
	theirs.Close()
	specR.Close()
	if err != nil {
		specW.Close()
		return -1, &unavailableError{err}
	}
	go func() {
		_ = json.NewEncoder(specW).Encode(spec)
		specW.Close()
	}()
	conn, err := net.FileConn(ours)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return -1, fmt.Errorf("sandbox: control socket: %w", err)
	}
	ctrl := conn.(*net.UnixConn)
	defer ctrl.Close()

	listeners, err := readReady(ctrl, len(p.Forward))
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return -1, &unavailableError{err}
	}
	fw := &forwarder{}
	for i, l := range listeners {
		if p.Serve != nil {
			fw.own(l)
			go p.Serve(p.Forward[i], l)
			continue
		}
		fw.serve(l, p.Forward[i])
	}
	defer fw.close()

	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		// PID 1 of the jail killed: the kernel kills everything in it.
		_ = cmd.Process.Kill()
		err = <-done
	}
	return exitStatus(err), nil
}

// dumpableMu serialises the moments startDumpable makes this process dumpable.
var dumpableMu sync.Mutex

// startDumpable starts cmd. With dumpable, this process is made dumpable for the time of
// the start: exec.Cmd writes the new user namespace's uid and gid maps of its child from
// here, and the child of a non-dumpable process has /proc files only root may open. Who
// could read this process' /proc meanwhile is a process of the same uid outside any jail:
// the function and the engine; scenario programs in user-namespace jails see no process
// of the machine.
func startDumpable(cmd *exec.Cmd, dumpable bool) error {
	if !dumpable {
		return cmd.Start()
	}
	dumpableMu.Lock()
	defer dumpableMu.Unlock()
	was, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
	if err != nil || was == 1 {
		return cmd.Start()
	}
	_ = unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
	defer func() { _ = unix.Prctl(unix.PR_SET_DUMPABLE, uintptr(was), 0, 0, 0) }()
	return cmd.Start()
}

// readReady reads the init's report and the listeners it made.
func readReady(ctrl *net.UnixConn, n int) ([]net.Listener, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*max(n, 1)))
	_ = ctrl.SetReadDeadline(time.Now().Add(30 * time.Second))
	k, oobn, _, _, err := ctrl.ReadMsgUnix(buf, oob)
	_ = ctrl.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, fmt.Errorf("jail did not start: %w", err)
	}
	var fds []int
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			got, err := unix.ParseUnixRights(&m)
			if err != nil {
				return nil, err
			}
			fds = append(fds, got...)
		}
	}
	closeAll := func() {
		for _, fd := range fds {
			_ = unix.Close(fd)
		}
	}
	var ready jailReady
	if err := json.Unmarshal(buf[:k], &ready); err != nil {
		closeAll()
		return nil, fmt.Errorf("jail report: %w", err)
	}
	if ready.Error != "" {
		closeAll()
		return nil, errors.New(ready.Error)
	}
	if len(fds) != n {
		closeAll()
		return nil, fmt.Errorf("jail sent %d listeners, want %d", len(fds), n)
	}
	ls := make([]net.Listener, n)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "listener")
		l, err := net.FileListener(f)
		f.Close()
		if err != nil {
			for _, l := range ls[:i] {
				l.Close()
			}
			closeAll()
			return nil, err
		}
		ls[i] = l
	}
	return ls, nil
}

// forwarder copies the jail's connections to the engine's addresses.
type forwarder struct {
	mu        sync.Mutex
	listeners []net.Listener
	conns     map[net.Conn]bool
	wg        sync.WaitGroup
}

// own makes l closed with the forwarder.
func (f *forwarder) own(l net.Listener) {
	f.mu.Lock()
	f.listeners = append(f.listeners, l)
	f.mu.Unlock()
}

func (f *forwarder) serve(l net.Listener, to string) {
	f.own(l)
	f.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() { f.pipe(c, to) })
		}
	})
}

func (f *forwarder) pipe(in net.Conn, to string) {
	out, err := net.DialTimeout("tcp", to, 10*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !f.track(in, out) {
		return
	}
	var once sync.Once
	end := func() {
		once.Do(func() {
			in.Close()
			out.Close()
		})
	}
	go func() { _, _ = io.Copy(out, in); end() }()
	_, _ = io.Copy(in, out)
	end()
	f.untrack(in, out)
}

func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		f.conns = map[net.Conn]bool{}
	}
	if f.listeners == nil { // closed
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = true
	}
	return true
}

func (f *forwarder) untrack(cs ...net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range cs {
		delete(f.conns, c)
	}
}

func (f *forwarder) close() {
	f.mu.Lock()
	for _, l := range f.listeners {
		l.Close()
	}
	f.listeners = nil
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// runPlain runs p as a child of this process. contained: in a process group of its own,
// killed with its whole tree (the caller is a subreaper: daemons come back to it) when
// it exits; otherwise exactly as exec does.
func runPlain(ctx context.Context, p Program, contained bool) (int, error) {
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Dir, cmd.Env = p.Dir, p.Env
	cmd.Stdout, cmd.Stderr = p.Stdout, p.Stderr
	if contained {
		if err := SetSubreaper(); err != nil {
			return -1, &unavailableError{err}
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		// Daemons may hold the output pipes: do not wait for them once the tree is dead.
		cmd.WaitDelay = time.Second
	}
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Process.Kill()
		err = <-done
	}
	if contained {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		KillDescendants()
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) && !errors.Is(err, exec.ErrWaitDelay) {
		return -1, err
	}
	return exitStatus(err), nil
}

// exitStatus is the code of a finished command's Wait error.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return exitErr.ExitCode()
	}
	return -1
}
