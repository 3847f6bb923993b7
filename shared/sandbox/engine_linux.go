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
// of a process-tree supervisor and exits with its status once every other process of the
// tree is gone.
//
//   - SIGINT is forwarded to the engine (the Automation API's cancel: pulumi cancels the
//     update and releases its stack lock).
//   - SIGTERM, SIGHUP, or the end of the lifeline (fd 3: the function process died or
//     gave up waiting) kill the whole tree at once.
//   - When the engine exits, whatever it left (plugins, programs, their daemons) is killed.
//
// As PID 1 of a PID namespace, "the whole tree" is the namespace (the kernel kills it
// when this process dies, even by SIGKILL). Otherwise the supervisor is the child
// subreaper of the tree and kills its descendants itself; only a SIGKILL aimed at the
// supervisor alone then leaves the tree running, which a process-group kill of the
// function process cannot do (the supervisor leads a group of its own).
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
	pid1 := os.Getpid() == 1
	if !pid1 {
		if err := SetSubreaper(); err != nil {
			fmt.Fprintln(os.Stderr, "challfn-sandbox engine: subreaper:", err)
			return 2
		}
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
	empty := make(chan struct{})
	go func() {
		reapUntil(pid, exited)
		close(empty)
	}()

	for {
		select {
		case code := <-exited:
			killTree(pid1, empty)
			return code
		case s := <-sigs:
			if s == unix.SIGINT {
				_ = unix.Kill(pid, unix.SIGINT)
				continue
			}
			killTree(pid1, empty)
			return 128 + int(s.(syscall.Signal))
		case <-lost:
			killTree(pid1, empty)
			return 137
		}
	}
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

// killTree ends every other process of the tree; empty is closed once every child has
// been reaped.
func killTree(pid1 bool, empty <-chan struct{}) {
	if pid1 {
		// kill(-1) from PID 1 reaches every other process of the namespace (the kernel
		// would do it anyway when PID 1 exits); they all come to it to be reaped.
		_ = unix.Kill(-1, unix.SIGKILL)
		select {
		case <-empty:
		case <-time.After(5 * time.Second):
		}
		return
	}
	killDescendants(reapChildren)
}
