//go:build !linux

package sandbox

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
)

// Containment needs Linux namespaces; elsewhere only Mode Off runs (development).

var errNotLinux = errors.New("sandbox: only available on Linux")

func engineMain([]string) int { return 2 }

func jailMain() int { return 2 }

// Program is one run of a scenario program.
type Program struct {
	Path           string
	Args           []string
	Env            []string
	Dir            string
	ReadOnly       []string
	Hide           []string
	Forward        []string
	Serve          func(addr string, l net.Listener)
	Stdout, Stderr io.Writer
	TmpBytes       int64
}

// Runner runs programs; on this system only with Mode Off.
type Runner struct {
	Bin  string
	Mode Mode
}

// Result is how a run ended.
type Result struct {
	Flavor   Flavor
	Code     int
	Degraded string
}

// Run runs p as a plain child when the mode is Off.
func (r *Runner) Run(ctx context.Context, p Program) (Result, error) {
	if r.Mode != Off {
		return Result{Code: -1}, errNotLinux
	}
	cmd := exec.CommandContext(ctx, p.Path, p.Args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = p.Dir, p.Env, p.Stdout, p.Stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return Result{Flavor: FlavorNone, Code: exitErr.ExitCode()}, nil
	}
	if err != nil {
		return Result{Code: -1}, err
	}
	return Result{Flavor: FlavorNone}, nil
}

// Supervised is not available off Linux.
type Supervised struct{}

// Supervise fails off Linux.
func Supervise(string, *exec.Cmd) (*Supervised, error) { return nil, errNotLinux }

func (*Supervised) Start() error { return errNotLinux }
func (*Supervised) Interrupt()   {}
func (*Supervised) Terminate()   {}
func (*Supervised) Kill()        {}
func (*Supervised) Wait() error  { return errNotLinux }
func (*Supervised) Pid() int     { return 0 }

// SetSubreaper does nothing off Linux.
func SetSubreaper() error { return nil }

// SetUndumpable does nothing off Linux.
func SetUndumpable() error { return nil }

// Descendants is not available off Linux.
func Descendants(int) []int { return nil }

// KillDescendants does nothing off Linux.
func KillDescendants() {}
