//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lifelineFD is the descriptor on which a supervisor or a jail learns that its owner died:
// the owner holds the other end and never writes; end of file means it is gone.
const lifelineFD = 3

// engineMain is `challfn-sandbox engine -- PATH ARGS...`: it runs PATH as the one child
// of a process-tree supervisor, the child subreaper of the tree, and exits with its status
// once the rest of the tree is gone.
//
//   - SIGINT is forwarded to the engine (the Automation API's cancel: pulumi cancels the
//     update and releases its stack lock).
//   - SIGTERM, SIGHUP, or the end of the lifeline (fd 3: the function process died, kill
//     -9 included, or gave up waiting) end the whole tree at once.
//   - When the engine exits, whatever it left (plugins, programs, their children) is ended.
//
// "The tree" is every descendant still in the supervisor's session: the engine, its
// plugins (each in a process group of its own) and their children. A process that made a
// session of its own is a deployed resource (the challfn-local provider's Services) and
// is left alone; a scenario program cannot use this to escape, as its jail's PID
// namespace (or, without a jail, the language host, its subreaper) ends its sessions too.
// The tree gets SIGTERM first (the language host then ends its program's tree) and
// SIGKILL endGrace later; the engine itself gets SIGKILL at once (see endTree). A SIGKILL aimed at the supervisor alone leaves the tree
// running; a kill of the function's process group does not reach the supervisor, which
// leads a group of its own.
func engineMain(args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "challfn-sandbox engine: no command")
		return 2
	}
	// The engine's death signal is tied to the thread that forks it: keep that thread.
	runtime.LockOSThread()
	// The environment holds the stacks' passphrase.
	_ = SetUndumpable()
	if err := SetSubreaper(); err != nil {
		fmt.Fprintln(os.Stderr, "challfn-sandbox engine: subreaper:", err)
		return 2
	}
	path, err := exec.LookPath(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "challfn-sandbox engine:", err)
		return 127
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP)
	// Not the lifeline: the engine gets only its standard descriptors.
	pid, err := syscall.ForkExec(path, args, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2},
		Sys:   &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "challfn-sandbox engine: start:", err)
		return 127
	}

	lost := make(chan struct{})
	if f := os.NewFile(lifelineFD, "lifeline"); f != nil {
		go func() {
			_, _ = io.Copy(io.Discard, f)
			close(lost)
		}()
	}
	exited := make(chan int, 1)
	go reapUntil(pid, exited)

	for {
		select {
		case code := <-exited:
			endTree(0)
			return code
		case s := <-sigs:
			if s == unix.SIGINT {
				_ = unix.Kill(pid, unix.SIGINT)
				continue
			}
			endTree(pid)
			return 128 + int(s.(syscall.Signal))
		case <-lost:
			endTree(pid)
			return 137
		}
	}
}

// endGrace is how long the tree has between SIGTERM and SIGKILL.
const endGrace = time.Second

// endTree ends every descendant in this process' session: SIGTERM, then SIGKILL. The
// engine, when still running (engine > 0), is killed at once instead: asked to stop, it
// would save the stack's checkpoint, which a DIY backend rewrites in place, and a kill
// in the middle of that write would leave the stack unreadable; killed, it leaves the
// last checkpoint whole and its lock behind, which is what a container kill does too.
func endTree(engine int) {
	if engine > 0 {
		_ = unix.Kill(engine, unix.SIGKILL)
	}
	self := os.Getpid()
	sid, err := unix.Getsid(0)
	if err != nil {
		sid = -1
	}
	tree := func() []int { return descendantsInSession(self, sid) }
	ds := tree()
	for _, p := range ds {
		_ = unix.Kill(p, unix.SIGTERM)
	}
	for deadline := time.Now().Add(endGrace); len(ds) > 0 && time.Now().Before(deadline); ds = tree() {
		time.Sleep(10 * time.Millisecond)
	}
	killAll(tree)
}

// reapUntil reaps every child of the calling process (orphans come to it) and reports
// the exit status of pid.
func reapUntil(pid int, exited chan<- int) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// ECHILD: nothing left. The engine was reaped before.
			return
		}
		if got == pid {
			exited <- exitCode(ws)
		}
	}
}

func exitCode(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 1
}
