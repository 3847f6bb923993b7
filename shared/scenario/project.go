package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"gopkg.in/yaml.v3"
)

// projectFiles are the names Pulumi accepts for a project file, in its order.
var projectFiles = []string{"Pulumi.yaml", "Pulumi.yml"}

// project is what challfn needs from a Pulumi project file.
type project struct {
	file   string // base name of the project file
	name   string
	binary string // runtime.options.binary, "" if none
	doc    *yaml.Node
}

// readProject finds and checks the project file of dir (docs/contract.md §8.3). The
// returned error is a plain message: the caller decides its Kind.
func readProject(dir string) (*project, error) {
	var p project
	var data []byte
	for _, name := range projectFiles {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		p.file, data = name, b
		break
	}
	if p.file == "" {
		return nil, errors.New("no Pulumi project file found (Pulumi.yaml or Pulumi.yml)")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("invalid %s: %w", p.file, err)
	}
	// Decoded the way the deployments read it too (shared/iac): that refuses
	// what the node tree tolerates, such as a key given twice.
	var asMap map[string]any
	if err := yaml.Unmarshal(data, &asMap); err != nil {
		return nil, fmt.Errorf("invalid %s: %w", p.file, err)
	}
	switch asMap["runtime"].(type) {
	case nil, string, map[string]any:
	default: // e.g. a mapping with a non-string key
		return nil, fmt.Errorf("invalid %s: runtime must be a name or a mapping of names", p.file)
	}
	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("invalid %s: not a YAML mapping", p.file)
	}
	p.doc = &doc
	top := doc.Content[0]

	if n := mapGet(top, "name"); n == nil || n.Kind != yaml.ScalarNode || n.Value == "" {
		return nil, fmt.Errorf("%s has no project name", p.file)
	} else if n.Tag != "!!str" {
		// `name: 123` is a number to every other reader (iac, the engine).
		return nil, fmt.Errorf("%s: the project name must be a string", p.file)
	} else if err := tokens.ValidateProjectName(n.Value); err != nil {
		return nil, fmt.Errorf("%s: %w", p.file, err)
	} else {
		p.name = n.Value
	}

	rt := mapGet(top, "runtime")
	var rtName string
	switch {
	case rt == nil:
		return nil, fmt.Errorf("%s has no runtime", p.file)
	case rt.Kind == yaml.ScalarNode:
		rtName = rt.Value
	case rt.Kind == yaml.MappingNode:
		if n := mapGet(rt, "name"); n != nil && n.Kind == yaml.ScalarNode {
			rtName = n.Value
		}
		if opts := mapGet(rt, "options"); opts != nil {
			if opts.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s: runtime.options must be a mapping", p.file)
			}
			if b := mapGet(opts, "binary"); b != nil {
				if b.Kind != yaml.ScalarNode || b.Tag != "!!str" || b.Value == "" {
					return nil, fmt.Errorf("%s: runtime.options.binary must be a non-empty string", p.file)
				}
				p.binary = b.Value
			}
		}
	}
	if rtName != "go" {
		return nil, fmt.Errorf("unsupported runtime: %q (only go)", rtName)
	}
	return &p, nil
}

// checkBinary verifies that the prebuilt binary is a regular file shipped in
// dir, and makes it executable.
func checkBinary(dir, binary string) error {
	rel, err := cleanTitle(filepath.ToSlash(binary))
	if err != nil {
		return fmt.Errorf("runtime.options.binary: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	fi, err := root.Lstat(rel)
	if err != nil {
		return fmt.Errorf("binary %q is not shipped in the scenario", binary)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("binary %q is not a regular file", binary)
	}
	return root.Chmod(rel, 0o755)
}

// compile builds the Go program of dir into dir/main. On failure the error
// text carries the compiler output.
func compile(ctx context.Context, goBin, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, CompileTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-o", "main", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w\n%s", err, bytes.TrimSpace(out.Bytes()))
	}
	fi, err := os.Lstat(filepath.Join(dir, "main"))
	if err != nil || !fi.Mode().IsRegular() {
		return errors.New("go build did not produce a ./main binary")
	}
	return nil
}

// setBinary rewrites the project file so the engine runs ./main, keeping the
// other fields (and comments) as they were.
func (p *project) setBinary(dir string) error {
	top := p.doc.Content[0]
	rt := mapGet(top, "runtime")
	if rt.Kind == yaml.ScalarNode {
		*rt = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		mapSet(rt, "name", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "go"})
	}
	opts := mapGet(rt, "options")
	if opts == nil {
		opts = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		mapSet(rt, "options", opts)
	}
	mapSet(opts, "binary", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: "./main"})
	p.binary = "./main"

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(p.doc); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, p.file), buf.Bytes(), 0o644)
}

func mapGet(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func mapSet(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}
