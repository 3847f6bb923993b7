package iac

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/auto"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/config"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"

	"github.com/challfn/challfn/shared/sandbox"
	"github.com/challfn/challfn/shared/telemetry"
)

// opWorkspace is one operation's auto.LocalWorkspace, in a directory of its own: a
// Pulumi.yaml whose `main` points at the program directory (left untouched, so shared by
// concurrent operations), the stack's settings file, and the engine's event log.
type opWorkspace struct {
	e       *Engine
	ws      auto.Workspace
	dir     string
	project string
	stack   string
}

// workspace makes the work directory and the auto.LocalWorkspace over it. No process is
// started: NewLocalWorkspace is given the Engine's PulumiCommand, and auto.Project and
// auto.Stacks only write files.
func (e *Engine) workspace(ctx context.Context, p Program, identity string, additional map[string]string) (*opWorkspace, error) {
	if p.Project == "" || identity == "" || strings.ContainsAny(identity, "/\\") {
		return nil, fmt.Errorf("iac: bad stack %q/%q", p.Project, identity)
	}
	proj, err := projectSettings(p)
	if err != nil {
		return nil, err
	}
	stack := StackName(p.Project, identity)
	settings, err := stackSettings(p.Project, identity, additional)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(e.cfg.TempDir, "challfn-iac-")
	if err != nil {
		return nil, fmt.Errorf("iac: work directory: %w", err)
	}
	ws, err := auto.NewLocalWorkspace(ctx,
		auto.WorkDir(dir),
		auto.Pulumi(e.cmd),
		auto.EnvVars(e.env(p.Project)),
		auto.Project(*proj),
		auto.Stacks(map[string]workspace.ProjectStack{stack: settings}),
	)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("iac: workspace: %w", err)
	}
	return &opWorkspace{e: e, ws: ws, dir: dir, project: p.Project, stack: stack}, nil
}

// listWorkspace is a workspace without a project, enough for `stack ls --all`.
func (e *Engine) listWorkspace(ctx context.Context) (*opWorkspace, error) {
	dir, err := os.MkdirTemp(e.cfg.TempDir, "challfn-iac-")
	if err != nil {
		return nil, fmt.Errorf("iac: work directory: %w", err)
	}
	ws, err := auto.NewLocalWorkspace(ctx, auto.WorkDir(dir), auto.Pulumi(e.cmd), auto.EnvVars(e.env("")))
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("iac: workspace: %w", err)
	}
	return &opWorkspace{e: e, ws: ws, dir: dir}, nil
}

func (ws *opWorkspace) close() { _ = os.RemoveAll(ws.dir) }

func (ws *opWorkspace) eventLog() string { return filepath.Join(ws.dir, "events.jsonl") }

// projectSettings is the program's project with `main` made absolute and a relative
// `runtime.options.binary` resolved against it, so that the project file can live in the
// work directory. Without a program (destroy by name) it is a bare project: destroy never
// runs the program.
func projectSettings(p Program) (*workspace.Project, error) {
	proj := &workspace.Project{Name: tokens.PackageName(p.Project), Runtime: workspace.NewProjectRuntimeInfo("go", nil)}
	if p.Dir != "" {
		_, path, err := readProject(p.Dir)
		if err != nil {
			return nil, err
		}
		if proj, err = workspace.LoadProject(path); err != nil {
			return nil, fmt.Errorf("iac: %w", err)
		}
		if name := proj.Name.String(); name != p.Project {
			return nil, fmt.Errorf("iac: program in %s is project %q, not %q", p.Dir, name, p.Project)
		}
		main := proj.Main
		if main == "" || !filepath.IsAbs(main) {
			main = filepath.Join(p.Dir, main)
		}
		proj.Main = main
		if bin, ok := proj.Runtime.Options()["binary"].(string); ok && bin != "" && !filepath.IsAbs(bin) {
			proj.Runtime.SetOption("binary", filepath.Join(main, bin))
		}
		// Stack settings are written next to the project file, in the work directory.
		proj.StackConfigDir = ""
	}
	// Project.Save (called by auto.Project) panics on an invalid project: check first.
	if err := proj.Validate(); err != nil {
		return nil, fmt.Errorf("iac: project %q: %w", p.Project, err)
	}
	return proj, nil
}

// stackSettings holds what upstream sets with two `pulumi config set` (docs/contract.md §7.2):
// `<project>:identity` and `<project>:additional` (a JSON object string, `{}` when empty).
// The passphrase salt is not needed: the engine takes it from the stack's state.
func stackSettings(project, identity string, additional map[string]string) (workspace.ProjectStack, error) {
	if additional == nil {
		additional = map[string]string{}
	}
	add, err := json.Marshal(additional)
	if err != nil {
		return workspace.ProjectStack{}, err
	}
	cfg := config.Map{}
	for name, value := range map[string]string{"identity": identity, "additional": string(add)} {
		key, err := config.ParseKey(project + ":" + name)
		if err != nil {
			return workspace.ProjectStack{}, fmt.Errorf("iac: config key: %w", err)
		}
		cfg[key] = config.NewValue(value)
	}
	return workspace.ProjectStack{Config: cfg}, nil
}

// env is the workspace's environment (auto.EnvVars), added to the inherited one of every
// process, after Config.Env.
func (e *Engine) env(project string) map[string]string {
	env := map[string]string{}
	for _, kv := range e.cfg.Env {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env[k] = v
		}
	}
	env["PULUMI_BACKEND_URL"] = e.cfg.BackendURL
	env["PULUMI_SKIP_UPDATE_CHECK"] = "true"
	env["PULUMI_SKIP_CONFIRMATIONS"] = "true"
	// --event-log is only accepted with this set (Stack.Up sets it too).
	env["PULUMI_DEBUG_COMMANDS"] = "true"
	// Stack settings are written without the passphrase salt: take it from the state.
	env["PULUMI_FALLBACK_TO_STATE_SECRETS_MANAGER"] = "true"
	// One backup of the whole state per operation would pile up in the bucket.
	env["PULUMI_DIY_BACKEND_DISABLE_CHECKPOINT_BACKUPS"] = "true"
	// The language host and challfn's providers sit next to the CLI.
	env["PATH"] = filepath.Dir(e.bin) + string(os.PathListSeparator) + os.Getenv("PATH")
	if project != "" {
		env["CM_PROJECT"] = project
	}
	if e.cfg.Passphrase != "" {
		env["PULUMI_CONFIG_PASSPHRASE"] = e.cfg.Passphrase
		env["PULUMI_CONFIG_PASSPHRASE_FILE"] = ""
	}
	if e.cfg.Sandbox != sandbox.Off {
		// A scenario may name any provider (and where to download it from): the engine
		// would fetch and run it outside the jail, with its credentials. Only the
		// providers the operator installed run (docs/threat-model.md).
		env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"
	}
	// For the language host (the engine passes its environment to its plugins).
	env[sandbox.EnvMode] = string(e.cfg.Sandbox)
	env[sandbox.EnvBin] = e.cfg.SandboxBin
	env[sandbox.EnvHide] = sandbox.HideList(e.hidden()...)
	return env
}

// hidden are the host paths no scenario program may see: the state folder of a file://
// backend, every work directory (stack settings, event logs), the engine's home, and
// Config.Hide.
func (e *Engine) hidden() []string {
	paths := []string{e.cfg.TempDir, os.Getenv("PULUMI_HOME")}
	if dir, ok := strings.CutPrefix(e.cfg.BackendURL, "file://"); ok {
		// file:///abs/path, or file://~ for the home (hidden by the language host).
		if u, err := url.Parse(e.cfg.BackendURL); err == nil && u.Path != "" {
			dir = u.Path
		}
		paths = append(paths, filepath.Clean(dir))
	}
	return append(paths, e.cfg.Hide...)
}

// result is one CLI process' outcome.
type result struct {
	stdout, stderr string
	err            error
}

// run runs one pulumi process in the workspace with PulumiCommand.Run, the way the
// workspace's own methods do (its directory, its environment), under the operation
// timeout. ctx must be detached from the caller (docs/design.md, decision 5): Run kills the process with
// its context. On expiry Run sends SIGINT (pulumi then cancels cleanly and releases the
// stack lock) and kills the process 10 s later if still running.
func (ws *opWorkspace) run(ctx context.Context, args ...string) result {
	defer ws.e.acquire(ctx)()
	ctx, cancel := context.WithTimeout(ctx, ws.e.cfg.OpTimeout)
	defer cancel()
	stdout, stderr, _, err := ws.ws.PulumiCommand().Run(ctx, ws.ws.WorkDir(), nil, nil, nil, ws.cmdEnv(), args...)
	if err != nil && ctx.Err() == nil && ws.breakStaleLocks(ctx, stderr) {
		// A dead engine's lock held the stack (see stale.go): once more.
		stdout, stderr, _, err = ws.ws.PulumiCommand().Run(ctx, ws.ws.WorkDir(), nil, nil, nil, ws.cmdEnv(), args...)
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("%w (after %s): %w", ctx.Err(), ws.e.cfg.OpTimeout, err)
	} else if err != nil && stackLocked.MatchString(stderr) {
		err = fmt.Errorf("%w: %w", ErrStackLocked, err)
	}
	return result{stdout: stdout, stderr: stderr, err: err}
}

// acquire waits for an engine process slot (Config.MaxProcesses) and
// returns its release. ctx is detached (docs/design.md, decision 5): accepted work waits for
// its turn however long the queue is; the timeout starts with the process.
func (e *Engine) acquire(ctx context.Context) (release func()) {
	if e.slots == nil {
		return func() {}
	}
	select {
	case e.slots <- struct{}{}:
	default:
		_, span := telemetry.Start(ctx, "pulumi.queue")
		e.slots <- struct{}{}
		span.End()
	}
	return func() { <-e.slots }
}

// cmdEnv is the environment of a CLI process run in the workspace.
func (ws *opWorkspace) cmdEnv() []string {
	var env []string
	if home := ws.ws.PulumiHome(); home != "" {
		env = append(env, "PULUMI_HOME="+home)
	}
	for k, v := range ws.ws.GetEnvVars() {
		env = append(env, k+"="+v)
	}
	return env
}

// withTimeout bounds a call of a Workspace method, which runs one process like run.
func (ws *opWorkspace) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, ws.e.cfg.OpTimeout)
}

// The CLI's messages that the auto package's IsCreateStack409Error and
// IsSelectStack404Error look for. Those take only errors made by the auto package itself,
// not the outcome of a PulumiCommand.Run, hence the same patterns here.
var (
	stackExists  = regexp.MustCompile(`stack.*already exists`)
	stackMissing = regexp.MustCompile(`no stack named.*found`)
)
