//go:build linux

package sandbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// jailSpec is what the language host sends the jail's init (on fd 4, JSON).
type jailSpec struct {
	Path string   `json:"path"`
	Args []string `json:"args"` // argv, argv[0] included
	Env  []string `json:"env"`
	Dir  string   `json:"dir"`
	// Root is an empty host directory to build the new root on.
	Root string `json:"root"`
	// ReadOnly are host paths shown at the same place, read-only.
	ReadOnly []string `json:"readOnly"`
	// Hide are host paths never shown, even under a shown directory.
	Hide []string `json:"hide"`
	// Forward are loopback TCP addresses served inside the jail; their listeners go
	// back to the language host, which forwards the connections.
	Forward []string `json:"forward"`
	// UID and GID, when >= 0, are the ids the program runs as (FlavorRoot).
	UID int `json:"uid"`
	GID int `json:"gid"`

	// TmpBytes caps the private /tmp.
	TmpBytes int64 `json:"tmpBytes"`
}

// jailReady is the init's one message back (fd 3), with the listeners' descriptors.
type jailReady struct {
	Error string `json:"error,omitempty"`
	// Proc says what /proc is: "proc" (of the jail's PID namespace) or "empty" (the
	// machine refused the mount).
	Proc string `json:"proc,omitempty"`
}

const specFD = 4

// oldRoot is where pivot_root puts the machine's tree, unmounted at once.
const oldRoot = ".oldroot"

// systemPaths are shown read-only in every jail when they exist: what a static or
// dynamically linked program and Go's net and crypto packages need, and nothing of
// challfn's (no home, no /var, no /run, no /tmp of the machine).
var systemPaths = []string{
	"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
	"/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts",
	"/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/mime.types",
}

// devices are bound into the jail's /dev.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// jailMain is `challfn-sandbox jail`, started by Run in new namespaces: it builds the
// program's root, reports to the language host, drops every privilege, runs the program
// as its only child and, when the program exits, kills whatever is left in the jail.
func jailMain() int {
	// Capabilities, the bounding set and no_new_privs are per thread: drop them on this
	// one and fork the program from it.
	runtime.LockOSThread()
	ctrlFile := os.NewFile(lifelineFD, "control")
	conn, err := net.FileConn(ctrlFile)
	_ = ctrlFile.Close()
	if err != nil {
		fmt.Fprintln(os.Stderr, "challfn-sandbox jail: control socket:", err)
		return 125
	}
	ctrl := conn.(*net.UnixConn)
	var spec jailSpec
	specFile := os.NewFile(specFD, "spec")
	err = json.NewDecoder(bufio.NewReader(specFile)).Decode(&spec)
	_ = specFile.Close()
	if err != nil {
		report(ctrl, jailReady{Error: "read spec: " + err.Error()}, nil)
		return 125
	}
	if os.Getpid() != 1 {
		report(ctrl, jailReady{Error: "not PID 1 of a PID namespace"}, nil)
		return 125
	}

	ready, listeners, err := buildJail(spec)
	if err == nil {
		err = dropPrivileges(spec)
	}
	if err != nil {
		report(ctrl, jailReady{Error: err.Error()}, nil)
		return 125
	}
	fds := make([]int, len(listeners))
	for i, f := range listeners {
		fds[i] = int(f.Fd())
	}
	if err := report(ctrl, ready, fds); err != nil {
		return 125
	}
	for _, f := range listeners {
		_ = f.Close()
	}

	pid, err := syscall.ForkExec(spec.Path, spec.Args, &syscall.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "could not run program %s: %v\n", spec.Path, err)
		return 127
	}
	// The language host gone (its end of the control socket closed): end the jail.
	go func() {
		_, _ = io.Copy(io.Discard, ctrl)
		_ = unix.Kill(-1, unix.SIGKILL)
		os.Exit(137)
	}()
	code := -1
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil { // ECHILD: the jail is empty
			return code
		}
		if got == pid {
			code = exitCode(ws)
			// Daemons, setsid or not, live in this PID namespace: end them now.
			_ = unix.Kill(-1, unix.SIGKILL)
		}
	}
}

func report(ctrl *net.UnixConn, r jailReady, fds []int) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	_, _, err = ctrl.WriteMsgUnix(b, oob, nil)
	return err
}

// buildJail makes the mount tree, the hostname and the loopback of the jail, and the
// listeners of spec.Forward.
func buildJail(spec jailSpec) (jailReady, []*os.File, error) {
	var ready jailReady
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return ready, nil, fmt.Errorf("make mounts private: %w", err)
	}
	root := spec.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=4m"); err != nil {
		return ready, nil, fmt.Errorf("root tmpfs: %w", err)
	}
	if err := os.Mkdir(filepath.Join(root, oldRoot), 0o700); err != nil {
		return ready, nil, err
	}
	for _, p := range systemPaths {
		if err := showPath(root, p); err != nil {
			return ready, nil, err
		}
	}
	// The private /tmp before the program's paths, which may lie under /tmp.
	tmp := filepath.Join(root, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return ready, nil, err
	}
	size := spec.TmpBytes
	if size <= 0 {
		size = 64 << 20
	}
	if err := unix.Mount("tmpfs", tmp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size="+strconv.FormatInt(size, 10)); err != nil {
		return ready, nil, fmt.Errorf("tmp: %w", err)
	}
	// Hidden paths first (an empty tmpfs over each), then the program's own paths,
	// which may lie under one of them (the program folder inside the scenario cache).
	for _, h := range spec.Hide {
		if h == "/" || under(h, "/tmp") || under(h, "/dev") || under(h, "/proc") {
			continue // the jail's own: nothing of the machine's is there
		}
		if err := hidePath(root, h); err != nil {
			return ready, nil, err
		}
	}
	for _, p := range spec.ReadOnly {
		if err := showPath(root, p); err != nil {
			return ready, nil, err
		}
	}
	if err := makeDev(root); err != nil {
		return ready, nil, err
	}
	proc := filepath.Join(root, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return ready, nil, err
	}
	ready.Proc = "proc"
	// A proc of this PID namespace shows only the jail's processes. Container runtimes
	// mask parts of their /proc, and the kernel then refuses a new one to an
	// unprivileged user namespace: an empty /proc is the fallback, never the machine's.
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		if err := unix.Mount("tmpfs", proc, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC|unix.MS_RDONLY, "size=4k"); err != nil {
			return ready, nil, fmt.Errorf("proc: %w", err)
		}
		ready.Proc = "empty"
	}
	if err := readOnlyBelow(root, tmp, proc); err != nil {
		return ready, nil, err
	}
	if err := pivot(root); err != nil {
		return ready, nil, err
	}
	_ = unix.Sethostname([]byte("scenario"))
	if err := loopbackUp(); err != nil {
		return ready, nil, err
	}
	var files []*os.File
	for _, addr := range spec.Forward {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return ready, nil, fmt.Errorf("serve %s in the jail: %w", addr, err)
		}
		f, err := l.(*net.TCPListener).File()
		_ = l.Close()
		if err != nil {
			return ready, nil, err
		}
		files = append(files, f)
	}
	return ready, files, nil
}

// showPath shows host path p at the same place under root, read-only (made so by
// readOnlyBelow). A symbolic link is copied as a link (merged /usr: /bin -> usr/bin).
func showPath(root, p string) error {
	st, err := os.Lstat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("show %s: %w", p, err)
	}
	target := filepath.Join(root, p)
	if st.Mode()&os.ModeSymlink != 0 {
		link, err := os.Readlink(p)
		if err != nil {
			return fmt.Errorf("show %s: %w", p, err)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("show %s: %w", p, err)
		}
		if err := os.Symlink(link, target); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("show %s: %w", p, err)
		}
		return nil
	}
	if err := mountPoint(target, st.IsDir()); err != nil {
		return fmt.Errorf("show %s: %w", p, err)
	}
	if err := unix.Mount(p, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("show %s: %w", p, err)
	}
	return nil
}

// hidePath puts an empty, read-only filesystem over p when p is visible under root.
func hidePath(root, p string) error {
	target := filepath.Join(root, p)
	st, err := os.Lstat(target)
	if err != nil || st.Mode()&os.ModeSymlink != 0 {
		return nil // not visible
	}
	if !st.IsDir() {
		return unix.Mount("/dev/null", target, "", unix.MS_BIND, "")
	}
	// Writable until readOnlyBelow, so that a program path below it can be shown.
	if err := unix.Mount("tmpfs", target, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("hide %s: %w", p, err)
	}
	return nil
}

// mountPoint makes an empty directory, or an empty file, at target.
func mountPoint(target string, dir bool) error {
	if dir {
		return os.MkdirAll(target, 0o755)
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		// A file that exists under a read-only mount is a mount point already.
		if _, serr := os.Stat(target); serr == nil {
			return nil
		}
		return err
	}
	return f.Close()
}

func makeDev(root string) error {
	dev := filepath.Join(root, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	for _, d := range devices {
		src := "/dev/" + d
		if _, err := os.Stat(src); err != nil {
			continue
		}
		target := filepath.Join(dev, d)
		if err := mountPoint(target, false); err != nil {
			return err
		}
		if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("dev %s: %w", d, err)
		}
	}
	for name, to := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(to, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// readOnlyBelow remounts read-only every mount at or under root except the writable
// ones themselves (what is mounted below them is made read-only too), keeping each mount's other flags (a user namespace may not
// clear nosuid, nodev or noexec of a mount it did not make).
func readOnlyBelow(root string, writable ...string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMount(f[4])
		if under(p, root) && !slices.Contains(writable, p) {
			points = append(points, p)
		}
	}
	// Parents first: a child mount is remounted after the mount it sits on.
	sort.Strings(points)
	for _, p := range points {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			return fmt.Errorf("statfs %s: %w", p, err)
		}
		flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY)
		for _, m := range []struct{ st, ms uintptr }{
			{unix.ST_NOSUID, unix.MS_NOSUID}, {unix.ST_NODEV, unix.MS_NODEV}, {unix.ST_NOEXEC, unix.MS_NOEXEC},
			{unix.ST_NOATIME, unix.MS_NOATIME}, {unix.ST_NODIRATIME, unix.MS_NODIRATIME}, {unix.ST_RELATIME, unix.MS_RELATIME},
		} {
			if uintptr(st.Flags)&m.st != 0 {
				flags |= m.ms
			}
		}
		if err := unix.Mount("", p, "", flags, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", p, err)
		}
	}
	return nil
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if under(p, d) {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// pivot makes root the root of the mount namespace and drops the machine's tree. The
// old root's mount point was made by buildJail while root was writable.
func pivot(root string) error {
	if err := unix.PivotRoot(root, filepath.Join(root, oldRoot)); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/"+oldRoot, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("drop the old root: %w", err)
	}
	return nil
}

// loopbackUp brings up lo, the only interface of the jail's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// dropPrivileges leaves the jail's init, and so the program it forks from this thread,
// without any privilege: no capability (effective, permitted, inheritable, ambient,
// bounding), no way to gain one back (no_new_privs; setuid bits and file capabilities
// are ignored), the program's uid when one is given, not dumpable.
func dropPrivileges(spec jailSpec) error {
	if spec.UID >= 0 {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setresgid(spec.GID, spec.GID, spec.GID); err != nil {
			return fmt.Errorf("setresgid: %w", err)
		}
		// Leaving uid 0 clears every capability but the bounding set.
		if err := syscall.Setresuid(spec.UID, spec.UID, spec.UID); err != nil {
			return fmt.Errorf("setresuid: %w", err)
		}
	} else {
		// uid 0 of a user namespace: drop the bounding set while CAP_SETPCAP is held,
		// and lock root's special treatment at exec away.
		for c := 0; c <= unix.CAP_LAST_CAP; c++ {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("drop bounding capability %d: %w", c, err)
			}
		}
		const secbits = 0x2f // NOROOT, NOROOT_LOCKED, NO_SETUID_FIXUP(_LOCKED), KEEP_CAPS_LOCKED
		if err := unix.Prctl(unix.PR_SET_SECUREBITS, secbits, 0, 0, 0); err != nil {
			return fmt.Errorf("securebits: %w", err)
		}
		if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("ambient capabilities: %w", err)
		}
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if _, _, e := unix.RawSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
			return fmt.Errorf("capset: %w", e)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return SetUndumpable()
}
