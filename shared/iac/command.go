package iac

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/blang/semver"

	"github.com/challfn/challfn/shared/sandbox"
)

// PulumiVersion is the CLI challfn is built against (scripts/install-pulumi.sh,
// tools/pulumi): what command.Version reports to the Automation API, which only uses it
// to pick flags.
var PulumiVersion = semver.MustParse("3.220.0")

// Caps of what one CLI process may leave in challfn's memory (see capBuffer). The engine's
// output holds the program's output and logs: a chatty scenario must not grow the
// function. `stack ls` prints the whole backend's stack list, which the janitor needs in
// full, and nothing a scenario writes.
const (
	outputHead     = 1 << 20
	outputTail     = 256 << 10
	stackListLimit = 256 << 20
)

// engineOnlyHidden are challfn's own credentials, which no engine process needs (the
// engine needs the passphrase and the backend's credentials, which stay). The language
// host hides the passphrase from the program as well (shared/langhost).
var engineOnlyHidden = map[string]bool{
	"API_TOKENS": true, "API_TOKENS_FILE": true,
	"OCI_USERNAME": true, "OCI_PASSWORD": true, "OCI_PASSWORD_FILE": true,
	"ETCD_USERNAME": true, "ETCD_PASSWORD": true, "ETCD_PASSWORD_FILE": true,
}

// command is the Engine's auto.PulumiCommand: every CLI process of every workspace runs
// through Run. Unlike the Automation API's own, it
//
//   - runs the CLI under challfn-sandbox's supervisor (sandbox.Supervise), so that no
//     process of the engine's tree (language host, providers, the scenario program and
//     what it started) outlives the CLI or challfn;
//   - gives the CLI the function's environment without challfn's own credentials;
//   - keeps a bounded part of the CLI's output (capBuffer) instead of all of it.
type command struct {
	bin     string // the pulumi CLI
	sandbox string // challfn-sandbox; "" runs the CLI as a plain child (sandbox.Off)
}

func (c *command) Version() semver.Version { return PulumiVersion }

// Run runs one CLI process the way auto's PulumiCommand.Run does (non-interactive,
// PULUMI_AUTOMATION_API, the CLI's directory first on PATH), and ends it when ctx ends:
// SIGINT first (pulumi cancels and releases the stack lock), killGrace later the whole
// process tree.
func (c *command) Run(ctx context.Context, workdir string, stdin io.Reader, additionalOutput, additionalErrorOutput []io.Writer, additionalEnv []string, args ...string) (string, string, int, error) {
	if !slices.Contains(args, "--non-interactive") {
		args = append(slices.Clone(args), "--non-interactive")
	}
	head := outputHead
	if len(args) >= 2 && args[0] == "stack" && args[1] == "ls" {
		head = stackListLimit
	}
	stdout, stderr := newCapBuffer(head, outputTail), newCapBuffer(head, outputTail)
	cmd := exec.Command(c.bin, args...)
	cmd.Dir = workdir
	cmd.Env = engineEnviron(os.Environ(), additionalEnv, filepath.Dir(c.bin))
	cmd.Stdin = stdin
	cmd.Stdout = io.MultiWriter(append(slices.Clone(additionalOutput), stdout)...)
	cmd.Stderr = io.MultiWriter(append(slices.Clone(additionalErrorOutput), stderr)...)
	// Output pipes a stray process still holds do not keep Run waiting.
	cmd.WaitDelay = 5 * time.Second

	p, err := c.start(cmd)
	if err != nil {
		return "", "", -2, fmt.Errorf("iac: start %s: %w", filepath.Base(c.bin), err)
	}
	done := make(chan error, 1)
	go func() { done <- p.wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		p.interrupt()
		select {
		case err = <-done:
		case <-time.After(killGrace):
			p.terminate()
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				p.kill()
				err = <-done
			}
		}
	}
	code := -2
	var exitErr *exec.ExitError
	if err == nil {
		code = 0
	} else if errors.As(err, &exitErr) {
		code = exitErr.ExitCode()
	}
	return stdout.String(), stderr.String(), code, err
}

// process is a started CLI process, supervised or plain.
type process struct {
	sup *sandbox.Supervised
	cmd *exec.Cmd
}

func (c *command) start(cmd *exec.Cmd) (*process, error) {
	if c.sandbox == "" {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		return &process{cmd: cmd}, cmd.Start()
	}
	sup, err := sandbox.Supervise(c.sandbox, cmd)
	if err != nil {
		return nil, err
	}
	return &process{sup: sup, cmd: cmd}, sup.Start()
}

func (p *process) wait() error {
	if p.sup != nil {
		return p.sup.Wait()
	}
	return p.cmd.Wait()
}

func (p *process) interrupt() {
	if p.sup != nil {
		p.sup.Interrupt()
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
}

// terminate ends the process tree (the supervisor kills it); a plain CLI is killed.
func (p *process) terminate() {
	if p.sup != nil {
		p.sup.Terminate()
		return
	}
	_ = p.cmd.Process.Kill()
}

func (p *process) kill() {
	if p.sup != nil {
		p.sup.Kill()
		return
	}
	_ = p.cmd.Process.Kill()
}

// engineEnviron is a CLI process' environment: environ without challfn's credentials,
// then additional, PULUMI_AUTOMATION_API, and bin first on PATH (where the language host
// and challfn's providers are).
func engineEnviron(environ, additional []string, bin string) []string {
	env := make([]string, 0, len(environ)+len(additional)+2)
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !engineOnlyHidden[strings.ToUpper(k)] {
			env = append(env, kv)
		}
	}
	env = append(env, additional...)
	env = append(env, "PULUMI_AUTOMATION_API=true")
	path := ""
	for _, kv := range env {
		if k, v, _ := strings.Cut(kv, "="); strings.EqualFold(k, "PATH") {
			path = v // the last one wins, as for the process
		}
	}
	if path == "" {
		path = bin
	} else if path != bin && !strings.HasPrefix(path, bin+string(os.PathListSeparator)) {
		path = bin + string(os.PathListSeparator) + path
	}
	return append(env, "PATH="+path)
}

// capBuffer keeps the first head bytes and the last tail bytes written to it and counts
// the rest: the engine's error summary, the stack-lock message and the outputs' JSON are
// at either end; a scenario that prints 200 MiB costs head+tail.
type capBuffer struct {
	mu      sync.Mutex
	head    []byte
	headMax int
	tail    []byte // ring of tailMax bytes once full
	tailMax int
	next    int // next write position in the full ring
	full    bool
	dropped int64
}

func newCapBuffer(head, tail int) *capBuffer { return &capBuffer{headMax: head, tailMax: tail} }

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(p)
	if room := b.headMax - len(b.head); room > 0 {
		k := min(room, len(p))
		b.head = append(b.head, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		if !b.full {
			room := b.tailMax - len(b.tail)
			k := min(room, len(p))
			b.tail = append(b.tail, p[:k]...)
			p = p[k:]
			if len(b.tail) == b.tailMax {
				b.full = true
			}
			continue
		}
		// Overwrite the oldest bytes of the ring.
		k := min(b.tailMax-b.next, len(p))
		copy(b.tail[b.next:], p[:k])
		b.dropped += int64(k)
		b.next = (b.next + k) % b.tailMax
		p = p[k:]
	}
	return n, nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var s strings.Builder
	s.Grow(len(b.head) + len(b.tail) + 64)
	s.Write(b.head)
	if b.dropped > 0 {
		fmt.Fprintf(&s, "\n[challfn: %d bytes of output dropped]\n", b.dropped)
	}
	if b.full {
		s.Write(b.tail[b.next:])
		s.Write(b.tail[:b.next])
	} else {
		s.Write(b.tail)
	}
	return s.String()
}
