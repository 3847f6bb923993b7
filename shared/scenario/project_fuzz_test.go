package scenario

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/encoding"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
	"github.com/pulumi/pulumi/sdk/v3/go/common/workspace"

	"github.com/challfn/challfn/shared/iac"
)

// Seeds: the project files of the contract (docs/contract.md §8.3) and of scenarios/.
var projectSeeds = []string{
	"name: outputs\nruntime: go\ndescription: challfn test scenario\n",
	"name: my-challenge\nruntime:\n  name: go\n  options:\n    binary: ./main\n",
	"name: x\nruntime: {name: go, options: {binary: main}}\n",
	"name: x\nruntime: nodejs\n",
	"name: 123\nruntime: go\n",
	"name: yes\nruntime: go\n",
	"name: \"../../etc\"\nruntime: go\n",
	"name: x\nruntime:\n  name: go\n  options: [1]\n",
	"name: x\nruntime:\n  name: go\n  options:\n    binary: 5\n",
	"name: &a x\nruntime: *a\n",
	"name: x\nname: y\nruntime: go\n",
	"? [a]\n: b\nname: x\nruntime: go\n",
	"name: x # comment\nruntime: go\nconfig:\n  x:identity: {type: string}\n",
	"--- \nname: x\nruntime: go\n---\nname: y\n",
	"name: !!binary eA==\nruntime: go\n",
	"",
	"[]",
}

// FuzzProjectFile parses arbitrary Pulumi.yaml content the three ways it is
// parsed in challfn's life: shared/scenario at registration (readProject),
// shared/iac at every deployment (LoadProgram), and the Pulumi engine itself
// (workspace.LoadProjectBytes). What registration accepts, the deployments
// must accept with the same project name, and the engine must not read
// another name or runtime; after the binary rewrite of a compiled scenario
// the file still reads the same.
func FuzzProjectFile(f *testing.F) {
	for _, s := range projectSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "Pulumi.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := readProject(dir)
		if err != nil {
			return
		}
		prog, err := iac.LoadProgram(dir)
		if err != nil {
			t.Fatalf("%q: registration accepts project %q, deployment refuses: %v", content, p.name, err)
		}
		if prog.Project != p.name {
			t.Fatalf("%q: registration reads project %q, deployment %q", content, p.name, prog.Project)
		}
		if err := tokens.ValidateProjectName(p.name); err != nil {
			t.Fatalf("%q: accepted project name %q that Pulumi refuses: %v", content, p.name, err)
		}
		if proj, err := workspace.LoadProjectBytes([]byte(content), "Pulumi.yaml", encoding.YAML); err == nil {
			if string(proj.Name) != p.name || proj.Runtime.Name() != "go" {
				t.Fatalf("%q: we read %q/go, Pulumi reads %q/%s", content, p.name, proj.Name, proj.Runtime.Name())
			}
		}

		if err := p.setBinary(dir); err != nil {
			t.Fatalf("%q: setBinary: %v", content, err)
		}
		q, err := readProject(dir)
		if err != nil {
			b, _ := os.ReadFile(filepath.Join(dir, "Pulumi.yaml"))
			t.Fatalf("%q: unreadable after setBinary: %v\n%s", content, err, b)
		}
		if q.name != p.name || q.binary != "./main" {
			t.Fatalf("%q: after setBinary: name %q binary %q", content, q.name, q.binary)
		}
	})
}

// FuzzCleanTitle checks the layer-title rule (docs/design.md, decision 10: file
// names in artifacts cannot escape their folder): an accepted title is a
// local, clean, slash-separated path, stable under a second cleaning, and
// opening it under an os.Root never leaves the root.
func FuzzCleanTitle(f *testing.F) {
	for _, s := range []string{
		"main.go", "./Pulumi.yaml", "a/b/c", "../x", "a/../../x", "/etc/passwd", "", ".", "./", "././a",
		"a//b", "a/./b", "a/", "a\x00b", "..", "...", "a\\..\\b", "C:\\x", "\u202e", "a/b/../c", ".//a",
	} {
		f.Add(s)
	}
	root := f.TempDir()
	inner := filepath.Join(root, "inner")
	if err := os.Mkdir(inner, 0o755); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, title string) {
		name, err := cleanTitle(title)
		if err != nil {
			return
		}
		if !filepath.IsLocal(name) || filepath.Clean(name) != name || strings.HasPrefix(name, "/") {
			t.Fatalf("%q accepted as %q", title, name)
		}
		for _, seg := range strings.Split(name, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("%q accepted as %q with segment %q", title, name, seg)
			}
		}
		if again, err := cleanTitle(name); err != nil || again != name {
			t.Fatalf("%q → %q → %q, %v", title, name, again, err)
		}
		full := filepath.Join(inner, filepath.FromSlash(name))
		if rel, err := filepath.Rel(inner, full); err != nil || !filepath.IsLocal(rel) {
			t.Fatalf("%q resolves outside the folder: %s", title, full)
		}
	})
}
