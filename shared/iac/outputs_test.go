package iac

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParseOutputs(t *testing.T) {
	const unknown = "04da6b54-80e4-46f7-96ec-b56ff0331ba9" // plugin.UnknownStringValue
	for _, tc := range []struct {
		name    string
		in      map[string]any
		want    Outputs
		wantErr string
	}{
		{"connection info only", map[string]any{"connection_info": "nc x 1"}, Outputs{ConnectionInfo: "nc x 1"}, ""},
		{"flag then flags", map[string]any{"connection_info": "c", "flag": "a", "flags": []any{"b", "c"}},
			Outputs{ConnectionInfo: "c", Flags: []string{"a", "b", "c"}}, ""},
		{"no dedup", map[string]any{"connection_info": "c", "flag": "a", "flags": []any{"a"}},
			Outputs{ConnectionInfo: "c", Flags: []string{"a", "a"}}, ""},
		{"null flags (sdk without flags)", map[string]any{"connection_info": "c", "flags": nil}, Outputs{ConnectionInfo: "c"}, ""},
		{"empty flag dropped", map[string]any{"connection_info": "c", "flag": ""}, Outputs{ConnectionInfo: "c"}, ""},
		{"empty connection info allowed", map[string]any{"connection_info": ""}, Outputs{}, ""},
		{"missing connection info", map[string]any{"flag": "a"}, Outputs{}, "connection_info is missing"},
		{"null connection info", map[string]any{"connection_info": nil}, Outputs{}, "connection_info is missing"},
		{"connection info not a string", map[string]any{"connection_info": 3.0}, Outputs{}, "connection_info must be a string, got number"},
		{"flag not a string", map[string]any{"connection_info": "c", "flag": 42.0}, Outputs{}, "flag must be a string"},
		// What chall-manager's SDK exports when the program set only ConnectionInfo: the
		// unset flags output is stored as the engine's unknown marker.
		{"sdk default: unknown flags", map[string]any{"connection_info": "c", "flags": unknown}, Outputs{ConnectionInfo: "c"}, ""},
		{"unknown flag", map[string]any{"connection_info": "c", "flag": unknown, "flags": []any{"b"}},
			Outputs{ConnectionInfo: "c", Flags: []string{"b"}}, ""},
		{"unknown flags elements skipped", map[string]any{"connection_info": "c", "flags": []any{unknown, "b", nil, ""}},
			Outputs{ConnectionInfo: "c", Flags: []string{"b"}}, ""},
		{"unknown connection info", map[string]any{"connection_info": unknown}, Outputs{}, "connection_info is missing"},
		{"empty flags", map[string]any{"connection_info": "c", "flag": "a", "flags": []any{}}, Outputs{ConnectionInfo: "c", Flags: []string{"a"}}, ""},
		// Upstream ignores flags that are not an array: so does challfn, saying so.
		{"flags a string", map[string]any{"connection_info": "c", "flag": "a", "flags": "b"},
			Outputs{ConnectionInfo: "c", Flags: []string{"a"}, Ignored: []string{"flags is a string, not an array of strings: ignored"}}, ""},
		{"flags an object", map[string]any{"connection_info": "c", "flags": map[string]any{"a": "b"}},
			Outputs{ConnectionInfo: "c", Ignored: []string{"flags is an object, not an array of strings: ignored"}}, ""},
		{"flags element not a string", map[string]any{"connection_info": "c", "flags": []any{"a", true}}, Outputs{},
			"invalid flag type for true, should be a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseOutputs(tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBadOutputs) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrBadOutputs with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ConnectionInfo != tc.want.ConnectionInfo || !slices.Equal(got.Flags, tc.want.Flags) || !slices.Equal(got.Ignored, tc.want.Ignored) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLoadProgram(t *testing.T) {
	for _, tc := range []struct {
		name, file, content, wantProject, wantErr string
	}{
		{"short runtime", "Pulumi.yaml", "name: a\nruntime: go\n", "a", ""},
		{"runtime with options", "Pulumi.yml", "name: b\nruntime:\n  name: go\n  options:\n    binary: ./main\n", "b", ""},
		{"other runtime", "Pulumi.yaml", "name: c\nruntime: nodejs\n", "", "unsupported runtime: nodejs"},
		{"no name", "Pulumi.yaml", "runtime: go\n", "", "no name"},
		{"no project file", "README.md", "hi", "", "no Pulumi project file found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			p, err := LoadProgram(dir)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || p.Project != tc.wantProject || p.Dir != dir {
				t.Fatalf("LoadProgram = %+v, %v", p, err)
			}
		})
	}
}

// TestWorkspaceFiles checks the files an operation hands the engine: the project points at
// the program and its binary, and the stack config holds the two strings of docs/contract.md §7.2.
func TestWorkspaceFiles(t *testing.T) {
	prog := t.TempDir()
	if err := os.WriteFile(filepath.Join(prog, "Pulumi.yaml"),
		[]byte("name: p\nruntime:\n  name: go\n  options:\n    binary: ./main\ndescription: d\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e, err := New(Config{PulumiBin: pulumiBin, BackendURL: "file://" + t.TempDir(), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ws, err := e.workspace(ctx, Program{Dir: prog, Project: "p"}, "0123", map[string]string{"k": "v: 'x'"})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.close()

	var proj struct {
		Name    string
		Main    string
		Runtime struct {
			Name    string
			Options map[string]string
		}
		Description string
	}
	readYAML(t, filepath.Join(ws.dir, "Pulumi.yaml"), &proj)
	if proj.Name != "p" || proj.Main != prog || proj.Runtime.Name != "go" ||
		proj.Runtime.Options["binary"] != filepath.Join(prog, "main") || proj.Description != "d" {
		t.Fatalf("project = %+v", proj)
	}

	var cfg struct{ Config map[string]any }
	readYAML(t, filepath.Join(ws.dir, "Pulumi.0123.yaml"), &cfg)
	if cfg.Config["p:identity"] != "0123" || cfg.Config["p:additional"] != `{"k":"v: 'x'"}` {
		t.Fatalf("config = %#v", cfg.Config)
	}

	if _, err := e.workspace(ctx, Program{Dir: prog, Project: "other"}, "id", nil); err == nil {
		t.Fatal("a program whose project differs from Program.Project was accepted")
	}
	if _, err := e.workspace(ctx, Program{Project: "p"}, "../x", nil); err == nil {
		t.Fatal("an identity with a path separator was accepted")
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestSummarize(t *testing.T) {
	if got := summarize([]string{"a", "b"}, "ignored"); got != "a; b" {
		t.Fatalf("diagnostics: %q", got)
	}
	if got := summarize(nil, "1\n2\n3\n4\n5\n6\n7\n"); got != "3; 4; 5; 6; 7" {
		t.Fatalf("stderr tail: %q", got)
	}
	if got := summarize([]string{strings.Repeat("x", 5000)}, ""); len(got) > 2100 {
		t.Fatalf("not truncated: %d", len(got))
	}
}

func TestHasSecret(t *testing.T) {
	if !hasSecret(map[string]any{"a": []any{"x", "[secret]"}}) || hasSecret(map[string]any{"a": "x"}) {
		t.Fatal("hasSecret wrong")
	}
}
