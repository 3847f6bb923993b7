package scenario

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"

	"github.com/challfn/challfn/internal/registry"
	"github.com/challfn/challfn/shared/iac"
)

// counter counts registry requests by kind.
type counter struct {
	blobGets     atomic.Int64
	manifestGets atomic.Int64
}

func (c *counter) middleware(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			switch {
			case strings.Contains(r.URL.Path, "/blobs/"):
				c.blobGets.Add(1)
			case strings.Contains(r.URL.Path, "/manifests/"):
				c.manifestGets.Add(1)
			}
		}
		h.ServeHTTP(w, r)
	})
}

func startRegistry(t *testing.T, opts registry.Options) *registry.Server {
	t.Helper()
	s, err := registry.Start(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// writeDir creates a folder holding files (slash paths → content).
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustPush(t *testing.T, dir, ref string, opts RegistryOptions) string {
	t.Helper()
	d, err := Push(t.Context(), dir, ref, opts)
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return d
}

// rawLayer is a layer of a hand-made manifest.
type rawLayer struct {
	title   string // "" = no title annotation
	content string
	size    int64 // declared size; 0 = real size
}

// pushRaw pushes a manifest built by hand, to test what Push would never produce.
func pushRaw(t *testing.T, host, repoTag string, layers []rawLayer) string {
	t.Helper()
	ctx := t.Context()
	p, err := parseRef(host + "/" + repoTag)
	if err != nil {
		t.Fatal(err)
	}
	repo := newRemoteClient(RegistryOptions{PlainHTTP: true}).repository(p)
	var descs []ocispec.Descriptor
	for _, l := range layers {
		d, err := oras.PushBytes(ctx, repo, FileMediaType, []byte(l.content))
		if err != nil {
			t.Fatal(err)
		}
		if l.size != 0 {
			d.Size = l.size
		}
		if l.title != "" {
			d.Annotations = map[string]string{ocispec.AnnotationTitle: l.title}
		}
		descs = append(descs, d)
	}
	man, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, ArtifactType, oras.PackManifestOptions{Layers: descs})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, man, p.Target); err != nil {
		t.Fatal(err)
	}
	return man.Digest.String()
}

// fakePreviewer records previews and fails with err when set.
type fakePreviewer struct {
	mu    sync.Mutex
	calls []iac.Program
	err   error
}

func (f *fakePreviewer) Preview(_ context.Context, p iac.Program, _ map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, p)
	return f.err
}

func (f *fakePreviewer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// newStore returns a file:// store URL in a fresh folder.
func newStore(t *testing.T) string {
	t.Helper()
	return "file://" + filepath.ToSlash(t.TempDir()) + "/store"
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	if cfg.StoreURL == "" {
		cfg.StoreURL = newStore(t)
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	cfg.Registry.PlainHTTP = true
	m, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// closedAddr returns a loopback address nobody listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func wantKind(t *testing.T, err error, want Kind) *Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	var se *Error
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *scenario.Error", err, err)
	}
	if se.Kind != want {
		t.Fatalf("kind = %v, want %v (error: %v)", se.Kind, want, err)
	}
	t.Logf("error: %v", err)
	return se
}

// noDepsProgram is a Go program without dependencies: compiles in a second.
var noDepsProgram = map[string]string{
	"go.mod":  "module example.com/nodeps\n\ngo 1.25\n",
	"main.go": "package main\n\nfunc main() {}\n",
}

func with(base map[string]string, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}
