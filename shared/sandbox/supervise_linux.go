//go:build linux

package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
)

// Supervised is an engine process run under `challfn-sandbox engine`.
type Supervised struct {
	cmd      *exec.Cmd
	lifeline *os.File // our end: closing it (or dying) ends the tree
	once     sync.Once
}

// Supervise turns cmd (not started; Path, Args, Env, Dir and the standard streams set)
// into `bin engine -- cmd.Path cmd.Args[1:]...`. The supervisor leads a process group of
// its own, so that a kill of the caller's group leaves it the time to end the tree.
func Supervise(bin string, cmd *exec.Cmd) (*Supervised, error) {
	if cmd.Process != nil {
		return nil, errors.New("sandbox: command already started")
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("sandbox: lifeline: %w", err)
	}
	args := append([]string{bin, "engine", "--", cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = bin, args
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return &Supervised{cmd: cmd, lifeline: w}, nil
}

// Start starts the supervisor.
func (s *Supervised) Start() error {
	err := s.cmd.Start()
	// The child has its copy of the lifeline's read end.
	_ = s.cmd.ExtraFiles[0].Close()
	if err != nil {
		_ = s.lifeline.Close()
	}
	return err
}

// Interrupt asks the engine to stop cleanly (SIGINT, forwarded by the supervisor).
func (s *Supervised) Interrupt() { _ = s.cmd.Process.Signal(os.Interrupt) }

// Terminate ends the whole process tree now: the supervisor kills it and exits.
func (s *Supervised) Terminate() { s.once.Do(func() { _ = s.lifeline.Close() }) }

// Kill is SIGKILL to the supervisor: the last resort if it does not exit after
// Terminate.
func (s *Supervised) Kill() { _ = s.cmd.Process.Kill() }

// Wait waits for the supervisor (it exits with the engine's status once the tree is
// gone) and drops the lifeline.
func (s *Supervised) Wait() error {
	err := s.cmd.Wait()
	s.Terminate()
	return err
}

// Pid is the supervisor's process id.
func (s *Supervised) Pid() int { return s.cmd.Process.Pid }
