package langhost

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// script writes an executable shell script standing for a prebuilt program.
func script(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
}

func runReq(t *testing.T, dir string, opts map[string]any) *pulumirpc.RunRequest {
	t.Helper()
	o, err := structpb.NewStruct(opts)
	if err != nil {
		t.Fatal(err)
	}
	return &pulumirpc.RunRequest{
		Project: "proj", Stack: "id1", Organization: "organization", Pwd: dir,
		Config:           map[string]string{"proj:identity": "id1", "proj:additional": `{"k":"v"}`},
		ConfigSecretKeys: []string{"proj:s"}, DryRun: true, Parallel: 4, MonitorAddress: "127.0.0.1:1",
		Info: &pulumirpc.ProgramInfo{RootDirectory: dir, ProgramDirectory: dir, EntryPoint: ".", Options: o},
	}
}

// TestRunPassesRunInfo: the program sees every variable sdk/v3's pulumi.Run reads.
func TestRunPassesRunInfo(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "env.txt")
	script(t, dir, "prog", "env > "+out+"\n")
	h := New("127.0.0.1:2", t.TempDir())
	resp, err := h.Run(context.Background(), runReq(t, dir, map[string]any{"binary": "./prog"}))
	if err != nil || resp.Error != "" || resp.Bail {
		t.Fatalf("Run = %+v, %v", resp, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Split(string(b), "\n")
	for _, want := range []string{
		"PULUMI_PROJECT=proj", "PULUMI_STACK=id1", "PULUMI_ORGANIZATION=organization",
		`PULUMI_CONFIG={"proj:additional":"{\"k\":\"v\"}","proj:identity":"id1"}`,
		`PULUMI_CONFIG_SECRET_KEYS=["proj:s"]`, "PULUMI_DRY_RUN=true", "PULUMI_PARALLEL=4",
		"PULUMI_MONITOR=127.0.0.1:1", "PULUMI_ENGINE=127.0.0.1:2", "PULUMI_ROOT_DIRECTORY=" + dir,
	} {
		if !slices.Contains(env, want) {
			t.Errorf("program environment lacks %s", want)
		}
	}
}

// TestRunReportsFailures maps the program's exit to what the engine expects.
func TestRunReportsFailures(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		bail       bool
		errHas     string
	}{
		{"success", "exit 0\n", false, ""},
		{"error already logged to the engine", "exit 32\n", true, ""},
		{"crash quotes its last words", "echo 'panic: kaboom' >&2\nexit 2\n", false, "panic: kaboom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			script(t, dir, "prog", tc.body)
			h := New("127.0.0.1:2", t.TempDir())
			h.Stderr = &strings.Builder{}
			resp, err := h.Run(context.Background(), runReq(t, dir, map[string]any{"binary": "prog"}))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Bail != tc.bail || !strings.Contains(resp.Error, tc.errHas) || (tc.errHas == "") != (resp.Error == "") {
				t.Fatalf("Run = %+v", resp)
			}
		})
	}
}

func TestRunMissingBinaryAndEngine(t *testing.T) {
	dir := t.TempDir()
	h := New("127.0.0.1:2", t.TempDir())
	resp, err := h.Run(context.Background(), runReq(t, dir, map[string]any{"binary": "./nope"}))
	if err != nil || !strings.Contains(resp.Error, "not found") {
		t.Fatalf("Run = %+v, %v", resp, err)
	}
	if _, err := New("", t.TempDir()).Run(context.Background(), runReq(t, dir, nil)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("Run before Handshake: %v", err)
	}
	h = New("", t.TempDir())
	if _, err := h.Handshake(context.Background(), &pulumirpc.LanguageHandshakeRequest{EngineAddress: "127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	if h.engine() != "127.0.0.1:9" {
		t.Fatal("Handshake did not record the engine address")
	}
}

func TestUnimplemented(t *testing.T) {
	_, err := New("", t.TempDir()).GenerateProject(context.Background(), &pulumirpc.GenerateProjectRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("GenerateProject: %v", err)
	}
}

func TestHashSources(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("main.go", "package main\n")
	write("go.mod", "module x\n")
	h1, err := HashSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	write("Pulumi.abc.yaml", "config: {}\n") // a stack config file is not a source
	write("main", "binary")
	if h2, _ := HashSources(dir); h2 != h1 {
		t.Fatal("hash changed with non-source files")
	}
	write("main.go", "package main\n// changed\n")
	if h3, _ := HashSources(dir); h3 == h1 {
		t.Fatal("hash did not change with the sources")
	}
}

// TestBuildCaches compiles a real Go program once and reuses it.
func TestBuildCaches(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n\ngo 1.25\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Builder{CacheDir: t.TempDir()}
	p1, err := b.Build(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	st1, _ := os.Stat(p1)
	p2, err := b.Build(context.Background(), dir)
	if err != nil || p2 != p1 {
		t.Fatalf("second build = %q, %v", p2, err)
	}
	if st2, _ := os.Stat(p2); !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatal("program rebuilt instead of reused")
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\nfunc main() { x }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Build(context.Background(), dir); err == nil || !strings.Contains(err.Error(), "undefined: x") {
		t.Fatalf("broken program: %v", err)
	}
}

// TestRunCapsOutput: a program printing far more than OutputMax has the rest dropped (and
// drained: it is not blocked), and the engine is told so; its last words still make the
// error message.
func TestRunCapsOutput(t *testing.T) {
	dir := t.TempDir()
	script(t, dir, "prog", "head -c 3000000 /dev/zero | tr '\\0' x\nhead -c 3000000 /dev/zero | tr '\\0' y >&2\necho 'last words' >&2\nexit 3\n")
	h := New("127.0.0.1:2", t.TempDir())
	var out, errb strings.Builder
	h.Stdout, h.Stderr, h.OutputMax = &out, &errb, 1000
	resp, err := h.Run(context.Background(), runReq(t, dir, map[string]any{"binary": "prog"}))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(resp.Error, "last words") {
		t.Fatalf("error %q lacks the program's last words", resp.Error)
	}
	for name, s := range map[string]string{"stdout": out.String(), "stderr": errb.String()} {
		if len(s) > 1300 || !strings.Contains(s, "bytes of program "+name+" dropped") {
			t.Errorf("%s: %d bytes passed on: %.200q", name, len(s), s)
		}
	}
}
