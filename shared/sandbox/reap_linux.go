//go:build linux

package sandbox

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// procStat is what /proc/<pid>/stat says of a process that matters here.
type procStat struct {
	ppid    int
	session int
	zombie  bool
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name may hold spaces and parentheses: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	// state ppid pgrp session ...
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	sid, err := strconv.Atoi(f[3])
	if err != nil {
		return procStat{}, false
	}
	return procStat{ppid: ppid, session: sid, zombie: f[0] == "Z" || f[0] == "X"}, true
}

// Descendants lists the living (non-zombie) descendants of root, from /proc. A process
// whose parent died and was reparented outside root's tree is not found: that is what a
// subreaper (or PID 1 of a namespace) prevents.
func Descendants(root int) []int { return descendantsInSession(root, -1) }

// descendantsInSession is Descendants limited to session sid (-1: any); a process of
// another session is left out with its whole subtree.
func descendantsInSession(root, sid int) []int {
	children := map[int][]procInfo{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		children[st.ppid] = append(children[st.ppid], procInfo{pid, st})
	}
	var out []int
	stack := []int{root}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		for _, c := range children[p] {
			if sid >= 0 && c.st.session != sid {
				continue
			}
			if !c.st.zombie {
				out = append(out, c.pid)
			}
			stack = append(stack, c.pid)
		}
	}
	return out
}

type procInfo struct {
	pid int
	st  procStat
}

// KillDescendants SIGKILLs every descendant of the calling process, whatever its
// session, until none is alive. The caller must be a subreaper (or PID 1), so that the
// children of a killed process come back to it instead of escaping to the machine's
// init; its zombie children are collected between rounds.
func KillDescendants() {
	self := os.Getpid()
	killAll(func() []int { return Descendants(self) })
}

// killAll SIGKILLs what list returns until it returns nothing. A process being killed
// cannot fork any more, so the rounds converge; the bound only guards against a /proc
// that lies.
func killAll(list func() []int) {
	for round := range 200 {
		ds := list()
		if len(ds) == 0 {
			return
		}
		for _, p := range ds {
			_ = unix.Kill(p, unix.SIGKILL)
		}
		reapChildren()
		time.Sleep(time.Duration(min(round+1, 20)) * time.Millisecond)
	}
}

// reapChildren collects every zombie child of the calling process without blocking.
func reapChildren() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}

// SetSubreaper makes the calling process the child subreaper of its descendants:
// orphans (a daemon whose parent exited, children of a killed engine) are reparented
// to it instead of to the machine's init, so that they can still be found and ended.
func SetSubreaper() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

// SetUndumpable makes the calling process non-dumpable: its /proc/<pid>/environ, mem,
// fd, ... belong to root and refuse every process without CAP_SYS_PTRACE, the same uid
// included. Processes that carry a secret in their environment call it first thing.
func SetUndumpable() error { return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0) }
