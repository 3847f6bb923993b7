// Package iac drives Pulumi stacks for challenge instances with the Pulumi Automation API
// (sdk/v3/go/auto): create, update (in place, blue-green, recreate), destroy and preview of a
// scenario program for one identity, with as few CLI processes as the API allows.
//
// A stack is `organization/<project>/<identity>`, its config is `<project>:identity` and
// `<project>:additional` (a JSON object string), and the program sees CM_PROJECT=<project>
// (docs/design.md, decision 6; docs/contract.md §7.2). State lives in the configured backend, so any Engine
// on the same backend can update or destroy what another created (docs/design.md, decision 2).
//
// How the Automation API is used. The Engine holds one auto.PulumiCommand
// (auto.NewPulumiCommand, version check skipped; its `pulumi version` runs once, in New).
// Every operation makes an auto.LocalWorkspace in a temporary directory of its own
// (auto.WorkDir, auto.Pulumi, auto.EnvVars): auto.Project writes the program's project
// there with `main` pointing at the scenario folder, which is never written to, and
// auto.Stacks the stack settings holding the config, so no `config set` process is needed.
// Workspace.ListStacks, Workspace.RemoveStack and auto.NewStack (preview's throw-away stack)
// are used as they are. Stack.Up and Stack.Destroy are not: they run `stack output` twice,
// `stack history` and `stack rm` after the operation. Their CLI invocations go through the
// workspace's PulumiCommand().Run with the same arguments instead, the outputs are read
// from the engine's `--event-log` file (decoded as auto/events EngineEvents), and
// `stack output --show-secrets` runs only when an output is secret. Processes per
// operation: create 2 (`stack init`, `up`), update in place 1, destroy 1 (`destroy
// --remove`), preview 3, list 1.
//
// Deployments outlive impatient clients (docs/design.md, decision 5): every operation runs detached from
// the caller's cancellation (context.WithoutCancel) under the Engine's own per-operation
// timeout, and that detached context is what PulumiCommand.Run gets (it interrupts the
// process when its context ends). A caller whose context is already done before anything
// started gets ctx.Err() and nothing happens; once an engine process has started, it runs
// to its end.
package iac

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Program is a scenario ready to run: Dir holds a Pulumi.yaml with `runtime: go`
// (a prebuilt `binary:` or Go source) and Project is the project name read from it.
type Program struct {
	Dir     string
	Project string
}

// Outputs are the stack outputs challfn reads back after an `up`.
type Outputs struct {
	ConnectionInfo string
	Flags          []string
	// Ignored describes outputs of a shape upstream ignores (see ParseOutputs): the
	// deployment goes on, and the caller logs them for the ChallMaker.
	Ignored []string
}

// Strategy is a hot-update strategy (docs/contract.md §4.14).
type Strategy string

const (
	UpdateInPlace Strategy = "update_in_place"
	BlueGreen     Strategy = "blue_green"
	Recreate      Strategy = "recreate"
)

// ErrNoProject is returned by LoadProgram when a directory has no Pulumi project file.
var ErrNoProject = errors.New("no Pulumi project file found")

// LoadProgram reads dir's Pulumi.yaml (or Pulumi.yml) and checks what the engine needs
// (docs/contract.md §8.3): a `name` and the `go` runtime.
func LoadProgram(dir string) (Program, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Program{}, err
	}
	proj, _, err := readProject(abs)
	if err != nil {
		return Program{}, err
	}
	name, _ := proj["name"].(string)
	if name == "" {
		return Program{}, fmt.Errorf("%s: project has no name", abs)
	}
	if rt := runtimeName(proj["runtime"]); rt != "go" {
		return Program{}, fmt.Errorf("%s: unsupported runtime: %s", abs, rt)
	}
	return Program{Dir: abs, Project: name}, nil
}

func readProject(dir string) (map[string]any, string, error) {
	for _, name := range []string{"Pulumi.yaml", "Pulumi.yml"} {
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, "", err
		}
		proj := map[string]any{}
		if err := yaml.Unmarshal(b, &proj); err != nil {
			return nil, "", fmt.Errorf("%s: %w", p, err)
		}
		return proj, p, nil
	}
	return nil, "", fmt.Errorf("%s: %w", dir, ErrNoProject)
}

func runtimeName(rt any) string {
	switch v := rt.(type) {
	case string:
		return v
	case map[string]any:
		s, _ := v["name"].(string)
		return s
	}
	return fmt.Sprint(rt)
}

// StackName is the fully qualified stack name of an instance (docs/contract.md §7.2).
func StackName(project, identity string) string {
	return "organization/" + project + "/" + identity
}
