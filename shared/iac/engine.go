package iac

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/apitype"
	"gopkg.in/yaml.v3"
)

// DefaultOpTimeout bounds one engine operation when Config.OpTimeout is zero; it stays
// under the 600 s request timeout of the functions (docs/ARCHITECTURE.md, DEPLOY_TIMEOUT).
const DefaultOpTimeout = 540 * time.Second

// Config configures an Engine.
type Config struct {
	// PulumiBin is the Pulumi CLI; default $CHALLFN_PULUMI, else `pulumi` on PATH. The
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
	// DefaultOpTimeout. On expiry the engine is interrupted, then killed 30 s later.
	OpTimeout time.Duration
	// TempDir is where per-operation work directories are made; default os.TempDir().
	TempDir string
	// NewIdentity makes identities for blue-green updates and previews; default
	// NewIdentity (contract §4.13).
	NewIdentity func() string
}

// Engine runs Pulumi operations on stacks of one backend. It is safe for concurrent use:
// every operation works in its own temporary directory, so any number of stacks of one
// program can be deployed at once.
type Engine struct {
	cfg Config
	bin string
}

// New checks cfg and returns an Engine. It starts no process.
func New(cfg Config) (*Engine, error) {
	if cfg.BackendURL == "" {
		return nil, errors.New("iac: a backend URL is required")
	}
	bin := cfg.PulumiBin
	if bin == "" {
		bin = os.Getenv("CHALLFN_PULUMI")
	}
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
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.TempDir == "" {
		cfg.TempDir = os.TempDir()
	}
	if cfg.NewIdentity == nil {
		cfg.NewIdentity = NewIdentity
	}
	return &Engine{cfg: cfg, bin: path}, nil
}

// NewIdentity returns a fresh instance identity: 16 random bytes, SHA-256, the first 16
// lowercase hex characters (contract §4.13).
func NewIdentity() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	sum := sha256.Sum256(b[:])
	return hex.EncodeToString(sum[:])[:16]
}

// detach applies decision 5: the caller's cancellation no longer reaches the engine.
func detach(ctx context.Context) (context.Context, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return context.WithoutCancel(ctx), nil
}

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
	ws, err := e.workspace(p, identity, additional)
	if err != nil {
		return Outputs{}, err
	}
	defer ws.close()

	if r := ws.run(ctx, "stack", "init", ws.stack, "--no-select"); r.err != nil && !strings.Contains(r.stderr, "already exists") {
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
// additional config, following strategy (contract §4.14, without the upstream bug: the old
// stack is always destroyed with the OLD program's project). It returns the instance's
// identity afterwards (new for blue-green) and its outputs.
//
//   - UpdateInPlace (or ""): `up` on the same stack. Stack names are per project, so when
//     old and new project names differ the stack cannot be reused: Recreate is used instead.
//     A failed in-place up leaves the stack as the engine left it (it existed before).
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
	ws, err := e.workspace(p, identity, additional)
	if err != nil {
		return Outputs{}, err
	}
	defer ws.close()
	outs, err := ws.up(ctx, "update")
	var oe *OpError
	if errors.As(err, &oe) && strings.Contains(oe.Log, "no stack named") {
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
	ws, err := e.workspace(Program{Project: project}, identity, nil)
	if err != nil {
		return err
	}
	defer ws.close()
	return e.destroy(ctx, ws)
}

func (e *Engine) destroy(ctx context.Context, ws *workspace) error {
	r := ws.run(ctx, "destroy", "--stack", ws.stack, "--yes", "--skip-preview", "--remove", "--color", "never")
	if r.err != nil {
		if strings.Contains(r.stderr, "no stack named") {
			return nil
		}
		return r.opError("destroy", ws.stack)
	}
	return nil
}

// Preview runs `pulumi preview` of p with additional on a throw-away stack (a random
// identity), removed afterwards (contract §8.4, without the leak). Three CLI processes.
func (e *Engine) Preview(ctx context.Context, p Program, additional map[string]string) error {
	ctx, err := detach(ctx)
	if err != nil {
		return err
	}
	ws, err := e.workspace(p, e.cfg.NewIdentity(), additional)
	if err != nil {
		return err
	}
	defer ws.close()
	if r := ws.run(ctx, "stack", "init", ws.stack, "--no-select"); r.err != nil {
		return r.opError("preview", ws.stack)
	}
	r := ws.run(ctx, "preview", "--stack", ws.stack, "--color", "never", "--event-log", ws.eventLog())
	var perr error
	if r.err != nil {
		perr = r.opErrorWithEvents("preview", ws.stack, ws.eventLog())
	}
	if rm := ws.run(ctx, "stack", "rm", ws.stack, "--yes", "--force"); rm.err != nil && perr == nil {
		return rm.opError("preview", ws.stack)
	}
	return perr
}

// StackRef names a stack of the backend.
type StackRef struct {
	Project  string
	Identity string
}

// ListStacks lists every stack of the backend, all projects included. One CLI process.
func (e *Engine) ListStacks(ctx context.Context) ([]StackRef, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	dir, err := os.MkdirTemp(e.cfg.TempDir, "challfn-iac-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ws := &workspace{e: e, dir: dir}
	r := ws.run(ctx, "stack", "ls", "--all", "--json")
	if r.err != nil {
		return nil, r.opError("list", "")
	}
	var rows []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil {
		return nil, &OpError{Op: "list", Summary: "unreadable stack list", Log: r.stdout + r.stderr, Err: err}
	}
	refs := make([]StackRef, 0, len(rows))
	for _, row := range rows {
		parts := strings.Split(row.Name, "/")
		if len(parts) != 3 {
			continue
		}
		refs = append(refs, StackRef{Project: parts[1], Identity: parts[2]})
	}
	return refs, nil
}

// workspace is one operation's directory: a Pulumi.yaml whose `main` points at the program
// directory (left untouched, so shared by concurrent operations), the stack's config file,
// and the engine's event log.
type workspace struct {
	e       *Engine
	dir     string
	project string
	stack   string
}

func (e *Engine) workspace(p Program, identity string, additional map[string]string) (*workspace, error) {
	if p.Project == "" || identity == "" || strings.ContainsAny(identity, "/\\") {
		return nil, fmt.Errorf("iac: bad stack %q/%q", p.Project, identity)
	}
	dir, err := os.MkdirTemp(e.cfg.TempDir, "challfn-iac-")
	if err != nil {
		return nil, fmt.Errorf("iac: work directory: %w", err)
	}
	ws := &workspace{e: e, dir: dir, project: p.Project, stack: StackName(p.Project, identity)}
	if err := ws.writeProject(p); err != nil {
		ws.close()
		return nil, err
	}
	if err := ws.writeStackConfig(identity, additional); err != nil {
		ws.close()
		return nil, err
	}
	return ws, nil
}

func (ws *workspace) close() { _ = os.RemoveAll(ws.dir) }

func (ws *workspace) eventLog() string { return filepath.Join(ws.dir, "events.jsonl") }

// writeProject copies the program's Pulumi.yaml with `main` made absolute and a relative
// `runtime.options.binary` resolved against the program directory. Without a program
// (destroy by name) it writes a bare project: destroy never runs the program.
func (ws *workspace) writeProject(p Program) error {
	proj := map[string]any{"name": p.Project, "runtime": "go"}
	if p.Dir != "" {
		var err error
		if proj, _, err = readProject(p.Dir); err != nil {
			return err
		}
		if name, _ := proj["name"].(string); name != p.Project {
			return fmt.Errorf("iac: program in %s is project %q, not %q", p.Dir, name, p.Project)
		}
		main, _ := proj["main"].(string)
		if main == "" || !filepath.IsAbs(main) {
			main = filepath.Join(p.Dir, main)
		}
		proj["main"] = main
		if rt, ok := proj["runtime"].(map[string]any); ok {
			if opts, ok := rt["options"].(map[string]any); ok {
				if bin, ok := opts["binary"].(string); ok && bin != "" && !filepath.IsAbs(bin) {
					opts["binary"] = filepath.Join(main, bin)
				}
			}
		}
	}
	b, err := yaml.Marshal(proj)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(ws.dir, "Pulumi.yaml"), b, 0o600)
}

// writeStackConfig writes what upstream sets with two `pulumi config set` (contract §7.2):
// `<project>:identity` and `<project>:additional` (a JSON object string, `{}` when empty).
// The passphrase salt is not needed here: the engine takes it from the stack's state.
func (ws *workspace) writeStackConfig(identity string, additional map[string]string) error {
	if additional == nil {
		additional = map[string]string{}
	}
	add, err := json.Marshal(additional)
	if err != nil {
		return err
	}
	cfg := map[string]map[string]string{"config": {
		ws.project + ":identity":   identity,
		ws.project + ":additional": string(add),
	}}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(ws.dir, "Pulumi."+identity+".yaml"), b, 0o600)
}

// up runs `pulumi up` and reads the outputs from its event log, so that no further CLI
// process is needed unless an output is secret.
func (ws *workspace) up(ctx context.Context, op string) (Outputs, error) {
	r := ws.run(ctx, "up", "--stack", ws.stack, "--yes", "--skip-preview", "--color", "never",
		"--event-log", ws.eventLog())
	if r.err != nil {
		return Outputs{}, r.opErrorWithEvents(op, ws.stack, ws.eventLog())
	}
	raw, found, err := stackOutputs(ws.eventLog())
	if err != nil || !found || hasSecret(raw) {
		// Secrets are masked in the event log; read them from the state instead.
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

// result is one CLI process' outcome.
type result struct {
	stdout, stderr string
	err            error
}

// run starts one pulumi process in the workspace under the operation timeout. On expiry
// pulumi gets SIGINT (it then cancels cleanly and releases the stack lock) and is killed
// 30 s later if still running.
func (ws *workspace) run(ctx context.Context, args ...string) result {
	e := ws.e
	ctx, cancel := context.WithTimeout(ctx, e.cfg.OpTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, append(args, "--non-interactive")...)
	cmd.Dir = ws.dir
	cmd.Env = ws.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (after %s): %w", ctx.Err(), e.cfg.OpTimeout, err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), err: err}
}

func (ws *workspace) env() []string {
	e := ws.e
	env := append(os.Environ(), e.cfg.Env...)
	env = append(env,
		"PULUMI_BACKEND_URL="+e.cfg.BackendURL,
		"PULUMI_SKIP_UPDATE_CHECK=true",
		"PULUMI_SKIP_CONFIRMATIONS=true",
		// --event-log is only accepted with this set.
		"PULUMI_DEBUG_COMMANDS=true",
		// Config files are written here without the passphrase salt: take it from the state.
		"PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER=true",
		// One backup of the whole state per operation would pile up in the bucket.
		"PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS=true",
		// The bundled language host sits next to the CLI: keep it first on PATH.
		"PATH="+filepath.Dir(e.bin)+string(os.PathListSeparator)+os.Getenv("PATH"),
	)
	if ws.project != "" {
		env = append(env, "CM_PROJECT="+ws.project)
	}
	if e.cfg.Passphrase != "" {
		env = append(env, "PULUMI_CONFIG_PASSPHRASE="+e.cfg.Passphrase, "PULUMI_CONFIG_PASSPHRASE_FILE=")
	}
	return env
}

func (r result) opError(op, stack string) *OpError {
	return &OpError{Op: op, Stack: stack, Summary: summarize(nil, r.stderr), Log: r.stdout + r.stderr, Err: r.err}
}

func (r result) opErrorWithEvents(op, stack, eventLog string) *OpError {
	diags, _ := errorDiagnostics(eventLog)
	return &OpError{Op: op, Stack: stack, Summary: summarize(diags, r.stderr), Log: r.stdout + r.stderr, Err: r.err}
}

// summarize keeps a short, one-line, human message: the engine's error diagnostics when there are
// some, otherwise the last non-empty lines of its error output.
func summarize(diags []string, stderr string) string {
	const max = 2000
	var s string
	if len(diags) > 0 {
		s = strings.Join(diags, "; ")
	} else {
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if len(lines) > 5 {
			lines = lines[len(lines)-5:]
		}
		s = strings.Join(lines, "; ")
	}
	// One line: summaries end up in JSON error bodies and log fields.
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}

// readEvents decodes the engine's event log (one JSON event per line).
func readEvents(path string, fn func(apitype.EngineEvent)) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev apitype.EngineEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("event log: %w", err)
		}
		fn(ev)
	}
	return sc.Err()
}

// stackOutputs returns the outputs of the root stack resource, as the engine reported them.
func stackOutputs(path string) (map[string]any, bool, error) {
	var outs map[string]any
	found := false
	err := readEvents(path, func(ev apitype.EngineEvent) {
		o := ev.ResOutputsEvent
		if o == nil || o.Metadata.Type != "pulumi:pulumi:Stack" || o.Metadata.New == nil {
			return
		}
		outs, found = o.Metadata.New.Outputs, true
	})
	if outs == nil {
		outs = map[string]any{}
	}
	return outs, found, err
}

func errorDiagnostics(path string) ([]string, error) {
	var msgs []string
	err := readEvents(path, func(ev apitype.EngineEvent) {
		d := ev.DiagnosticEvent
		if d == nil || d.Severity != "error" {
			return
		}
		if m := strings.TrimSpace(d.Message); m != "" {
			msgs = append(msgs, m)
		}
	})
	return msgs, err
}

// hasSecret tells whether the event log masked a value: it shows secrets as "[secret]".
func hasSecret(v any) bool {
	switch t := v.(type) {
	case string:
		return t == "[secret]"
	case []any:
		for _, x := range t {
			if hasSecret(x) {
				return true
			}
		}
	case map[string]any:
		for _, x := range t {
			if hasSecret(x) {
				return true
			}
		}
	}
	return false
}
