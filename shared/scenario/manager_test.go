package scenario

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"gocloud.dev/blob"
	"gopkg.in/yaml.v3"

	"github.com/challfn/challfn/shared/registry"
)

// TestRegisterOnceThenGetElsewhere is the key property: one Register
// compiles the scenario once even under concurrency, and another Manager
// (another function instance: empty cache, same store, no Go toolchain)
// gets a runnable program without compiling or contacting the registry.
func TestRegisterOnceThenGetElsewhere(t *testing.T) {
	var reqs counter
	reg := startRegistry(t, registry.Options{Middleware: reqs.middleware})
	ref := reg.Host() + "/scn/simple:v1"
	dg := mustPush(t, "testdata/simple", ref, RegistryOptions{PlainHTTP: true})
	store := newStore(t)
	prev := &fakePreviewer{}
	a := newManager(t, Config{StoreURL: store, Previewer: prev})

	const n = 20
	results := make([]*Scenario, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			results[i], errs[i] = a.Register(t.Context(), ref, map[string]string{"i": "x"})
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("register %d: %v", i, errs[i])
		}
		if results[i].Digest != dg || results[i].Program != results[0].Program {
			t.Fatalf("register %d returned %+v, want digest %s and one shared program", i, results[i], dg)
		}
	}
	if got := a.compiles.Load(); got != 1 {
		t.Fatalf("compiled %d times, want 1", got)
	}
	if got := a.pulls.Load(); got != 1 {
		t.Fatalf("pulled %d times, want 1", got)
	}
	files, err := listFiles("testdata/simple")
	if err != nil {
		t.Fatal(err)
	}
	if got := reqs.blobGets.Load(); got != int64(len(files)) {
		t.Fatalf("registry served %d blobs, want one per file (%d)", got, len(files))
	}
	if got := prev.count(); got != n {
		t.Fatalf("previewed %d times, want %d (every registration is validated)", got, n)
	}

	// The store holds exactly the documented object for the digest.
	bucket, err := blob.OpenBucket(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	var keys []string
	for it := bucket.List(nil); ; {
		obj, err := it.Next(t.Context())
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, obj.Key)
	}
	wantKey := "scenarios/" + strings.TrimPrefix(dg, "sha256:") + ".tar.gz"
	if len(keys) != 1 || keys[0] != wantKey {
		t.Fatalf("store keys %v, want [%s]", keys, wantKey)
	}
	// No metadata sidecar on a file:// store (bucketurl.Normalize): nothing a
	// killed writer could leave half-written.
	if matches, _ := filepath.Glob(filepath.Join(strings.TrimPrefix(store, "file://"), "scenarios", "*.attrs")); len(matches) != 0 {
		t.Fatalf("metadata sidecars in the store: %v", matches)
	}

	prog := results[0].Program
	if prog.Project != "simple" {
		t.Fatalf("project %q", prog.Project)
	}
	checkPrepared(t, prog.Dir)

	// Another instance: empty cache, same store, no toolchain.
	blobsBefore := reqs.blobGets.Load()
	b := newManager(t, Config{StoreURL: store, GoBinary: filepath.Join(t.TempDir(), "no-go-here")})
	gets := make([]*Scenario, n)
	for i := range n {
		wg.Go(func() { gets[i], errs[i] = b.Get(t.Context(), dg) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("get %d: %v", i, errs[i])
		}
		if gets[i].Program != gets[0].Program || gets[i].Digest != dg {
			t.Fatalf("get %d: %+v", i, gets[i])
		}
	}
	if b.downloads.Load() != 1 || b.compiles.Load() != 0 || b.pulls.Load() != 0 {
		t.Fatalf("second manager: downloads %d compiles %d pulls %d, want 1/0/0",
			b.downloads.Load(), b.compiles.Load(), b.pulls.Load())
	}
	if reqs.blobGets.Load() != blobsBefore {
		t.Fatal("Get contacted the registry")
	}
	if gets[0].Program.Dir == prog.Dir || gets[0].Program.Project != "simple" {
		t.Fatalf("second manager program %+v", gets[0].Program)
	}
	checkPrepared(t, gets[0].Program.Dir)
	sameFile(t, filepath.Join(prog.Dir, "main"), filepath.Join(gets[0].Program.Dir, "main"))

	// Registering the same digest there neither compiles nor pulls blobs.
	if _, err := b.Register(t.Context(), ref, nil); err != nil {
		t.Fatal(err)
	}
	if b.compiles.Load() != 0 || reqs.blobGets.Load() != blobsBefore {
		t.Fatal("re-registering a stored digest compiled or pulled")
	}

	// A third instance sharing b's cache folder finds it without the store.
	c := newManager(t, Config{StoreURL: newStore(t), CacheDir: filepath.Dir(filepath.Dir(gets[0].Program.Dir))})
	if got, err := c.Get(t.Context(), dg); err != nil || got.Program.Dir != gets[0].Program.Dir {
		t.Fatalf("get from shared cache: %+v %v", got, err)
	}
}

// checkPrepared asserts a compiled scenario folder: executable main, project
// file pointing at it, other fields kept.
func checkPrepared(t *testing.T, dir string) {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, "main"))
	if err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("main binary: %v %v", fi, err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "Pulumi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Name        string
		Description string
		Runtime     struct {
			Name    string
			Options map[string]any
		}
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Name != "simple" || doc.Description != "challfn test scenario" ||
		doc.Runtime.Name != "go" || doc.Runtime.Options["binary"] != "./main" {
		t.Fatalf("rewritten Pulumi.yaml:\n%s", raw)
	}
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

func TestValidation(t *testing.T) {
	reg := startRegistry(t, registry.Options{})
	prebuilt := "#!/bin/sh\necho prebuilt\n"
	tests := []struct {
		name       string
		files      map[string]string
		previewErr error
		kind       Kind
		detail     string
		compiles   int64
		check      func(t *testing.T, s *Scenario)
	}{
		{name: "no project file", files: map[string]string{"main.go": "package main"},
			kind: KindSpec, detail: "no Pulumi project file"},
		{name: "not yaml", files: map[string]string{"Pulumi.yaml": "name: [x"},
			kind: KindSpec, detail: "invalid Pulumi.yaml"},
		{name: "unsupported runtime", files: map[string]string{"Pulumi.yaml": "name: x\nruntime: nodejs\n"},
			kind: KindSpec, detail: `unsupported runtime: "nodejs"`},
		{name: "unsupported runtime object", files: map[string]string{"Pulumi.yaml": "name: x\nruntime:\n  name: python\n"},
			kind: KindSpec, detail: `unsupported runtime: "python"`},
		{name: "no runtime", files: map[string]string{"Pulumi.yaml": "name: x\n"},
			kind: KindSpec, detail: "no runtime"},
		{name: "no name", files: map[string]string{"Pulumi.yaml": "runtime: go\n", "main": prebuilt},
			kind: KindSpec, detail: "no project name"},
		{name: "binary not a string", files: map[string]string{"Pulumi.yaml": "name: x\nruntime:\n  name: go\n  options:\n    binary: 42\n"},
			kind: KindSpec, detail: "must be a non-empty string"},
		{name: "binary not shipped", files: map[string]string{"Pulumi.yaml": "name: x\nruntime:\n  name: go\n  options:\n    binary: ./main\n"},
			kind: KindSpec, detail: "not shipped"},
		{name: "binary outside", files: map[string]string{"Pulumi.yaml": "name: x\nruntime:\n  name: go\n  options:\n    binary: ../../bin/sh\n"},
			kind: KindSpec, detail: "not a clean relative path"},
		{name: "compile failure", compiles: 1,
			files: with(noDepsProgram, map[string]string{"Pulumi.yaml": "name: x\nruntime: go\n", "main.go": "package main\n\nfunc main() { undefinedThing() }\n"}),
			kind:  KindPreprocessing, detail: "undefined: undefinedThing"},
		{name: "preview failure", compiles: 0, previewErr: errors.New("error: program failed: boom"),
			files: map[string]string{"Pulumi.yaml": "name: x\nruntime:\n  name: go\n  options:\n    binary: main\n", "main": prebuilt},
			kind:  KindSpec, detail: "program failed: boom"},
		{name: "prebuilt kept as is", compiles: 0,
			files: map[string]string{"Pulumi.yml": "name: pre\nruntime:\n  name: go\n  options:\n    binary: ./bin/main\n", "bin/main": prebuilt},
			check: func(t *testing.T, s *Scenario) {
				got, err := os.ReadFile(filepath.Join(s.Program.Dir, "bin/main"))
				if err != nil || string(got) != prebuilt {
					t.Fatalf("binary changed: %q %v", got, err)
				}
				fi, _ := os.Stat(filepath.Join(s.Program.Dir, "bin/main"))
				if fi.Mode().Perm() != 0o755 {
					t.Fatalf("binary mode %v, want 0755", fi.Mode().Perm())
				}
				y, _ := os.ReadFile(filepath.Join(s.Program.Dir, "Pulumi.yml"))
				if !strings.Contains(string(y), "binary: ./bin/main") || s.Program.Project != "pre" {
					t.Fatalf("project file changed: %s", y)
				}
				if _, err := os.Stat(filepath.Join(s.Program.Dir, "main")); err == nil {
					t.Fatal("a prebuilt scenario was compiled")
				}
			}},
		{name: "compiled, other runtime options kept", compiles: 1,
			files: with(noDepsProgram, map[string]string{"Pulumi.yaml": "name: nd # comment\nruntime:\n  name: go\n  options:\n    buildTarget: x\nconfig:\n  a: b\n"}),
			check: func(t *testing.T, s *Scenario) {
				y, _ := os.ReadFile(filepath.Join(s.Program.Dir, "Pulumi.yaml"))
				for _, want := range []string{"binary: ./main", "buildTarget: x", "a: b", "# comment", "name: nd"} {
					if !strings.Contains(string(y), want) {
						t.Fatalf("rewritten project file lacks %q:\n%s", want, y)
					}
				}
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := reg.Host() + "/scn/validation:" + string(rune('a'+i))
			mustPush(t, writeDir(t, tt.files), ref, RegistryOptions{PlainHTTP: true})
			m := newManager(t, Config{Previewer: &fakePreviewer{err: tt.previewErr}})
			s, err := m.Register(t.Context(), ref, nil)
			if got := m.compiles.Load(); got != tt.compiles {
				t.Fatalf("compiled %d times, want %d", got, tt.compiles)
			}
			if tt.kind != KindUnknown {
				se := wantKind(t, err, tt.kind)
				if !strings.Contains(se.Detail, tt.detail) {
					t.Fatalf("detail %q does not mention %q", se.Detail, tt.detail)
				}
				if tt.kind != KindSpec || tt.previewErr == nil {
					if m.uploads.Load() != 0 {
						t.Fatal("an invalid scenario reached the store")
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
}

func TestUnsafeArtifacts(t *testing.T) {
	reg := startRegistry(t, registry.Options{})
	ok := rawLayer{title: "Pulumi.yaml", content: "name: x\nruntime:\n  name: go\n  options:\n    binary: main\n"}
	bin := rawLayer{title: "main", content: "#!/bin/sh\n"}
	tests := []struct {
		name   string
		layers []rawLayer
		max    int64
		kind   Kind
	}{
		{name: "parent traversal", layers: []rawLayer{ok, bin, {title: "../x", content: "pwned"}}, kind: KindUnsafeTitle},
		{name: "nested traversal", layers: []rawLayer{ok, bin, {title: "a/../../x", content: "pwned"}}, kind: KindUnsafeTitle},
		{name: "absolute", layers: []rawLayer{ok, bin, {title: "/etc/x", content: "pwned"}}, kind: KindUnsafeTitle},
		{name: "dot", layers: []rawLayer{ok, bin, {title: ".", content: "x"}}, kind: KindUnsafeTitle},
		{name: "duplicate", layers: []rawLayer{ok, bin, {title: "main", content: "other"}}, kind: KindUnsafeTitle},
		{name: "file under a file", layers: []rawLayer{ok, bin, {title: "main/x", content: "x"}}, kind: KindUnsafeTitle},
		{name: "over the cap", max: 1024, layers: []rawLayer{ok, bin, {title: "big", content: strings.Repeat("x", 2000)}}, kind: KindTooLarge},
		{name: "declared size lies", layers: []rawLayer{ok, bin, {title: "liar", content: strings.Repeat("x", 5000), size: 10}}, kind: KindOCI},
		{name: "untitled layers ignored, dot-slash tolerated", layers: []rawLayer{{title: "./Pulumi.yaml", content: ok.content}, bin, {content: "no title"}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := reg.Host() + "/scn/unsafe:" + string(rune('a'+i))
			pushRaw(t, reg.Host(), "scn/unsafe:"+string(rune('a'+i)), tt.layers)
			cache := t.TempDir()
			m := newManager(t, Config{CacheDir: cache, MaxBytes: tt.max})
			s, err := m.Register(t.Context(), ref, nil)
			if tt.kind == KindUnknown {
				if err != nil {
					t.Fatal(err)
				}
				entries, _ := os.ReadDir(s.Program.Dir)
				if len(entries) != 2 {
					t.Fatalf("prepared folder holds %d entries, want Pulumi.yaml and main", len(entries))
				}
				return
			}
			wantKind(t, err, tt.kind)
			for _, p := range []string{filepath.Join(cache, "x"), filepath.Join(cache, "scenarios", "x"), "/etc/x"} {
				if _, err := os.Stat(p); err == nil {
					t.Fatalf("%s was written", p)
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(cache, "scenarios")); len(entries) != 0 {
				t.Fatalf("cache not cleaned after a failure: %v", entries)
			}
		})
	}
}

// TestLyingRegistry serves blobs without Content-Length (so the client cannot
// check sizes up front) or with altered bytes: the reader's own limits and
// digest check must catch both.
func TestLyingRegistry(t *testing.T) {
	tests := []struct {
		name   string
		alter  func(w *alteringWriter)
		layers []rawLayer
		max    int64
	}{
		{name: "longer than declared, chunked", alter: func(w *alteringWriter) { w.dropLength = true },
			layers: []rawLayer{{title: "Pulumi.yaml", content: strings.Repeat("x", 5000), size: 10}}},
		{name: "altered content", alter: func(w *alteringWriter) { w.flip = true },
			layers: []rawLayer{{title: "Pulumi.yaml", content: "name: x\nruntime: go\n"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var armed atomic.Bool
			reg := startRegistry(t, registry.Options{Middleware: func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if armed.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
						aw := &alteringWriter{ResponseWriter: w}
						tt.alter(aw)
						w = aw
					}
					h.ServeHTTP(w, r)
				})
			}})
			pushRaw(t, reg.Host(), "scn/liar:v1", tt.layers)
			armed.Store(true)
			m := newManager(t, Config{})
			_, err := m.Register(t.Context(), reg.Host()+"/scn/liar:v1", nil)
			wantKind(t, err, KindOCI)
		})
	}
}

func TestGetErrors(t *testing.T) {
	m := newManager(t, Config{})
	_, err := m.Get(t.Context(), "sha256:"+strings.Repeat("b", 64))
	wantKind(t, err, KindNotPrepared)
	_, err = m.Get(t.Context(), "latest")
	wantKind(t, err, KindMalformedRef)
}

// alteringWriter misbehaves like a broken or hostile registry.
type alteringWriter struct {
	http.ResponseWriter
	dropLength bool // send without Content-Length (chunked)
	flip       bool // alter every byte of the body
}

func (w *alteringWriter) WriteHeader(code int) {
	if w.dropLength {
		w.Header().Del("Content-Length")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *alteringWriter) Write(b []byte) (int, error) {
	if w.flip {
		b = bytes.Clone(b)
		for i := range b {
			b[i] ^= 0x20
		}
	}
	return w.ResponseWriter.Write(b)
}
