package iac

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/auto/optlist"
	"github.com/pulumi/pulumi/sdk/v3/go/common/constant"

	"github.com/challfn/challfn/shared/bucketurl"
	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/sandbox"
)

// Config configures an Engine.
type Config struct {
	// PulumiBin is the Pulumi CLI (CHALLFN_PULUMI in shared/config); default `pulumi` on PATH. The
	// language host pulumi-language-go must sit next to it (or be on PATH).
	PulumiBin string
	// BackendURL is where stack state lives: file://, gs://, s3://, azblob://, ...
	BackendURL string
	// Passphrase encrypts stack secrets (PULUMI_CONFIG_PASSPHRASE). When empty, the
	// process environment must provide PULUMI_CONFIG_PASSPHRASE(_FILE).
	Passphrase string
	// Env is added to every engine process ("KEY=value"), after the inherited process
	// environment (KUBECONFIG and the like reach the program either way).
	Env []string
	// OpTimeout bounds each engine operation (up, destroy, preview, ...). Default
	// config.DefaultDeployTimeout. On expiry the engine is interrupted, and its whole process tree
	// killed killGrace later (command.Run).
	OpTimeout time.Duration
	// TempDir is where per-operation work directories are made; default os.TempDir().
	TempDir string
	// Sandbox is how scenario programs and engine process trees are contained
	// (SCENARIO_SANDBOX, shared/sandbox); "" is sandbox.Auto.
	Sandbox sandbox.Mode
	// SandboxBin is challfn-sandbox (CHALLFN_SANDBOX_BIN); default next to the CLI,
	// else on PATH. Required unless Sandbox is sandbox.Off.
	SandboxBin string
	// Hide are host paths a scenario program never sees, in addition to the file://
	// backend's folder, TempDir and PULUMI_HOME (the scenario cache, ...).
	Hide []string
	// NewIdentity makes identities for blue-green updates and previews; default
	// identity.New (docs/contract.md §4.13).
	NewIdentity func() string
	// MaxProcesses bounds how many engine processes of operations (`stack
	// init`, `up`, `destroy`, `preview`...) run at once; more wait their turn
	// (span "pulumi.queue"). 0 means no bound. Each one is a CPU-bound
	// process tree of ~100 MiB: a bound keeps a function instance's memory
	// in its limit and lets its cheap requests (reads) through while
	// deployments queue, where the platform's request concurrency limit would
	// queue the reads behind them.
	MaxProcesses int
	// ExclusiveStacks says that every caller runs an operation on a stack only
	// while no other engine may (challfn's manager holds the instance's writer
	// lock in etcd, or a fresh identity): a stack lock met then was left by an
	// engine that is gone (its lock's lease expired, which is how the caller
	// got the stack), and is broken at once instead of after OpTimeout.
	ExclusiveStacks bool
}

// Engine runs Pulumi operations on stacks of one backend. It is safe for concurrent use:
// every operation works in its own temporary directory, so any number of stacks of one
// program can be deployed at once.
type Engine struct {
	cfg Config
	bin string
	// cmd runs every CLI process of every workspace (command.go).
	cmd *command
	// flavor is the jail scenario programs get here (found by New), degraded why no
	// stronger one.
	flavor   sandbox.Flavor
	degraded string
	// slots bounds the concurrent engine processes (Config.MaxProcesses);
	// nil when unbounded.
	slots chan struct{}
	// previews are the template backends of previews (preview.go).
	previews previewStacks
}

// New checks cfg and returns an Engine. Unless cfg.Sandbox is sandbox.Off, it runs one
// trivial program the way scenario programs will run (sandbox.Probe) to learn which jail
// this machine allows: with sandbox.Require, New fails when that is none.
func New(cfg Config) (*Engine, error) {
	if cfg.BackendURL == "" {
		return nil, errors.New("iac: a backend URL is required")
	}
	// The engine and the lock sweeper write the backend the same way
	// (bucketurl.Normalize: a kill mid-write leaves it readable).
	backend, err := bucketurl.Normalize(cfg.BackendURL)
	if err != nil {
		return nil, fmt.Errorf("iac: backend URL: %w", err)
	}
	cfg.BackendURL = backend
	bin := cfg.PulumiBin
	if bin == "" {
		bin = "pulumi"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("iac: pulumi CLI: %w", err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, err
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = config.DefaultDeployTimeout
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.NewIdentity == nil {
		cfg.NewIdentity = identity.New
	}
	if cfg.Sandbox == "" {
		cfg.Sandbox = sandbox.Auto
	}
	if _, err := sandbox.ParseMode(string(cfg.Sandbox)); err != nil {
		return nil, fmt.Errorf("iac: %w", err)
	}
	e := &Engine{cfg: cfg, bin: path, cmd: &command{bin: path}, flavor: sandbox.FlavorNone, degraded: "SCENARIO_SANDBOX=off"}
	if cfg.Sandbox != sandbox.Off {
		sb, err := sandbox.FindBin(cfg.SandboxBin, path)
		if err != nil {
			return nil, fmt.Errorf("iac: %w", err)
		}
		e.cmd.sandbox = sb
		e.cfg.SandboxBin = sb
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := sandbox.Probe(ctx, sb, cfg.Sandbox)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("iac: scenario sandbox: %w", err)
		}
		e.flavor, e.degraded = res.Flavor, res.Degraded
	}
	if cfg.MaxProcesses > 0 {
		e.slots = make(chan struct{}, cfg.MaxProcesses)
	}
	return e, nil
}

// Sandbox reports the jail scenario programs get (sandbox.FlavorNone with
// sandbox.Off or when no namespace could be made) and why no stronger one.
func (e *Engine) Sandbox() (flavor sandbox.Flavor, degraded string) { return e.flavor, e.degraded }

// detach applies docs/design.md, decision 5: the caller's cancellation no longer reaches the engine.
func detach(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

// The arguments of Stack.Up and Stack.Destroy of the auto package, run here with the
// workspace's PulumiCommand().Run: Stack.Up runs `stack output` twice and `stack history`
// after the up, and Stack.Destroy `stack history` and `stack rm` after the destroy, four
// and two processes the outputs from the event log and `destroy --remove` make useless.
var (
	upArgs      = []string{"up", "--yes", "--skip-preview", "--exec-kind=" + constant.ExecKindAutoLocal, "--color", "never"}
	destroyArgs = []string{"destroy", "--yes", "--skip-preview", "--exec-kind=" + constant.ExecKindAutoLocal, "--color", "never", "--remove"}
	previewArgs = []string{"preview", "--exec-kind=" + constant.ExecKindAutoLocal, "--color", "never"}
)

// Create makes the stack of identity, runs `up` and reads its outputs. When the up or
// its outputs fail, whatever was created is destroyed and the stack removed before the
// error (an *OpError) is returned. Creating a stack that already exists (a retried event)
// updates it instead. Two CLI processes: `stack init` and `up`.
func (e *Engine) Create(ctx context.Context, p Program, identity string, additional map[string]string) (Outputs, error) {
	ctx, err := detach(ctx)
	if err != nil {
		return Outputs{}, err
	}
	return e.create(ctx, p, identity, additional)
}

func (e *Engine) create(ctx context.Context, p Program, identity string, additional map[string]string) (Outputs, error) {
	ws, err := e.workspace(ctx, p, identity, additional)
	if err != nil {
		return Outputs{}, err
	}
	defer ws.close()

	// Not auto.NewStack (Workspace.CreateStack): it selects the new stack, and a selection
	// is a file in $PULUMI_HOME/workspaces named after the work directory, left behind by
	// every create since each operation has a directory of its own.
	if r := ws.run(ctx, "stack", "init", ws.stack, "--no-select"); r.err != nil && !stackExists.MatchString(r.stderr) {
		return Outputs{}, r.opError("create", ws.stack)
	}
	outs, err := ws.up(ctx, "create")
	if err == nil {
		return outs, nil
	}
	if cerr := e.destroy(ctx, ws); cerr != nil {
		return Outputs{}, errors.Join(err, fmt.Errorf("%w: %w", ErrCleanup, cerr))
	}
	return Outputs{}, err
}

// Update moves the instance `identity`, deployed with old, to the new program and
// additional config, following strategy (docs/contract.md §4.14, without the upstream bug: the old
// stack is always destroyed with the OLD program's project). It returns the instance's
// identity afterwards (new for blue-green) and its outputs.
//
//   - UpdateInPlace (or ""): `up` on the same stack (one CLI process). Stack names are per
//     project, so when old and new project names differ the stack cannot be reused:
//     Recreate is used instead. A failed in-place up leaves the stack as the engine left it
//     (it existed before).
//   - BlueGreen: create a stack with a new identity, then destroy and remove the old one.
//     If that destroy fails the new instance is returned with an error wrapping
//     ErrOldNotDestroyed.
//   - Recreate: destroy and remove the old stack, then create it again (same identity).
func (e *Engine) Update(ctx context.Context, old, new Program, strategy Strategy, identity string, additional map[string]string) (string, Outputs, error) {
	ctx, err := detach(ctx)
	if err != nil {
		return identity, Outputs{}, err
	}
	switch strategy {
	case UpdateInPlace, "":
		if old.Project != new.Project {
			return e.recreate(ctx, old, new, identity, additional)
		}
		outs, err := e.updateInPlace(ctx, new, identity, additional)
		return identity, outs, err
	case BlueGreen:
		id := e.cfg.NewIdentity()
		outs, err := e.create(ctx, new, id, additional)
		if err != nil {
			return identity, Outputs{}, err
		}
		if err := e.destroyStack(ctx, old.Project, identity); err != nil {
			return id, outs, fmt.Errorf("%w: %w", ErrOldNotDestroyed, err)
		}
		return id, outs, nil
	case Recreate:
		return e.recreate(ctx, old, new, identity, additional)
	default:
		return identity, Outputs{}, fmt.Errorf("%w: %q", ErrUnknownStrategy, strategy)
	}
}

func (e *Engine) recreate(ctx context.Context, old, new Program, identity string, additional map[string]string) (string, Outputs, error) {
	if err := e.destroyStack(ctx, old.Project, identity); err != nil {
		return identity, Outputs{}, err
	}
	outs, err := e.create(ctx, new, identity, additional)
	return identity, outs, err
}

func (e *Engine) updateInPlace(ctx context.Context, p Program, identity string, additional map[string]string) (Outputs, error) {
	ws, err := e.workspace(ctx, p, identity, additional)
	if err != nil {
		return Outputs{}, err
	}
	defer ws.close()
	// No auto.SelectStack first: it is one more process, and `up --stack` fails the same
	// way on a missing stack.
	outs, err := ws.up(ctx, "update")
	var oe *OpError
	if errors.As(err, &oe) && stackMissing.MatchString(oe.Log) {
		// The backend lost the stack: deploy it afresh rather than fail the update.
		return e.create(ctx, p, identity, additional)
	}
	return outs, err
}

// Destroy destroys the stack of identity and removes it from the backend. A stack that does
// not exist is already destroyed: Destroy is idempotent. Only the program's project name is
// needed (destroy works from the state), see DestroyStack. One CLI process.
func (e *Engine) Destroy(ctx context.Context, p Program, identity string) error {
	return e.DestroyStack(ctx, p.Project, identity)
}

// DestroyStack is Destroy without the program: for the janitor, which finds stacks with
// ListStacks and may no longer have their scenario.
func (e *Engine) DestroyStack(ctx context.Context, project, identity string) error {
	ctx, err := detach(ctx)
	if err != nil {
		return err
	}
	return e.destroyStack(ctx, project, identity)
}

func (e *Engine) destroyStack(ctx context.Context, project, identity string) error {
	ws, err := e.workspace(ctx, Program{Project: project}, identity, nil)
	if err != nil {
		return err
	}
	defer ws.close()
	return e.destroy(ctx, ws)
}

func (e *Engine) destroy(ctx context.Context, ws *opWorkspace) (err error) {
	ctx, span := ws.startOp(ctx, "destroy")
	defer func() { endOp(span, ws.eventLog(), err) }()
	r := ws.run(ctx, slices.Concat(destroyArgs, []string{"--stack", ws.stack, "--event-log", ws.eventLog()})...)
	if r.err != nil {
		if stackMissing.MatchString(r.stderr) {
			return nil
		}
		return r.opError("destroy", ws.stack)
	}
	return nil
}

// StackRef names a stack of the backend.
type StackRef struct {
	Project  string
	Identity string
}

// listAttempts is how many times ListStacks tries (see there).
const listAttempts = 3

// ListStacks lists every stack of the backend, all projects included. One CLI process
// (Workspace.ListStacks).
func (e *Engine) ListStacks(ctx context.Context) ([]StackRef, error) {
	ws, err := e.listWorkspace(ctx)
	if err != nil {
		return nil, err
	}
	defer ws.close()
	lctx, cancel := ws.withTimeout(ctx)
	defer cancel()
	// `stack ls` reads every stack's checkpoint, and a DIY backend rewrites
	// them in place (no_tmp_dir): a listing taken while an engine writes one
	// fails with "EOF". A moment later the file is whole again.
	var sums []auto.StackSummary
	for attempt := 1; ; attempt++ {
		sums, err = ws.ws.ListStacks(lctx, optlist.All())
		if err == nil || attempt == listAttempts || lctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
	}
	if err != nil {
		return nil, autoOpError("list", "", err)
	}
	refs := make([]StackRef, 0, len(sums))
	for _, s := range sums {
		parts := strings.Split(s.Name, "/")
		if len(parts) != 3 {
			continue
		}
		refs = append(refs, StackRef{Project: parts[1], Identity: parts[2]})
	}
	return refs, nil
}

// up runs `pulumi up` and reads the outputs from its event log, so that no further CLI
// process is needed unless an output is secret.
func (ws *opWorkspace) up(ctx context.Context, op string) (_ Outputs, err error) {
	ctx, span := ws.startOp(ctx, "up")
	defer func() { endOp(span, ws.eventLog(), err) }()
	r := ws.run(ctx, slices.Concat(upArgs, []string{"--stack", ws.stack, "--event-log", ws.eventLog()})...)
	if r.err != nil {
		return Outputs{}, r.opErrorWithEvents(op, ws.stack, ws.eventLog())
	}
	raw, found, err := stackOutputs(ws.eventLog())
	if err != nil || !found || hasSecret(raw) {
		// Secrets are masked in the event log; read them from the state instead. One
		// process, where Workspace.StackOutputs runs two (with and without secrets).
		so := ws.run(ctx, "stack", "output", "--stack", ws.stack, "--json", "--show-secrets")
		if so.err != nil {
			return Outputs{}, so.opError(op, ws.stack)
		}
		raw = map[string]any{}
		if err := json.Unmarshal([]byte(so.stdout), &raw); err != nil {
			return Outputs{}, &OpError{Op: op, Stack: ws.stack, Summary: "unreadable stack outputs", Log: so.stdout, Err: err}
		}
	}
	outs, err := ParseOutputs(raw)
	if err != nil {
		return Outputs{}, &OpError{Op: op, Stack: ws.stack, Summary: err.Error(), Log: r.stdout + r.stderr, Err: err}
	}
	return outs, nil
}
