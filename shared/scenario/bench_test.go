package scenario

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/challfn/challfn/internal/registry"
)

// benchPrebuilt pushes a prebuilt scenario whose binary has size bytes.
func benchPrebuilt(b *testing.B, reg *registry.Server, size int) string {
	b.Helper()
	dir := b.TempDir()
	bin := make([]byte, size)
	rand.Read(bin)
	if err := os.WriteFile(filepath.Join(dir, "main"), bin, 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Pulumi.yaml"), []byte("name: bench\nruntime:\n  name: go\n  options:\n    binary: ./main\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	ref := reg.Host() + "/bench/prebuilt:v1"
	if _, err := Push(b.Context(), dir, ref, RegistryOptions{PlainHTTP: true}); err != nil {
		b.Fatal(err)
	}
	return ref
}

func benchManager(b *testing.B, store string) *Manager {
	b.Helper()
	m, err := New(b.Context(), Config{StoreURL: store, CacheDir: b.TempDir(), Registry: RegistryOptions{PlainHTTP: true}})
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkRegisterPrebuilt: first registration of a 32 MiB prebuilt
// scenario (resolve, pull, verify, archive, upload to a file:// store).
func BenchmarkRegisterPrebuilt(b *testing.B) {
	reg, err := registry.Start(b.Context(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	ref := benchPrebuilt(b, reg, 32<<20)
	b.SetBytes(32 << 20)
	for b.Loop() {
		m := benchManager(b, "file://"+b.TempDir())
		if _, err := m.Register(b.Context(), ref, nil); err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

// BenchmarkGetFromStore: a cold function instance loading a registered
// 32 MiB scenario (download from a file:// store, extract).
func BenchmarkGetFromStore(b *testing.B) {
	reg, err := registry.Start(b.Context(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	ref := benchPrebuilt(b, reg, 32<<20)
	store := "file://" + b.TempDir()
	seed := benchManager(b, store)
	s, err := seed.Register(b.Context(), ref, nil)
	if err != nil {
		b.Fatal(err)
	}
	seed.Close()
	b.SetBytes(32 << 20)
	for b.Loop() {
		m := benchManager(b, store)
		if _, err := m.Get(b.Context(), s.Digest); err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
}

// BenchmarkGetCached: a warm instance (the digest is already in memory).
func BenchmarkGetCached(b *testing.B) {
	reg, err := registry.Start(b.Context(), registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer reg.Close()
	ref := benchPrebuilt(b, reg, 1<<10)
	m := benchManager(b, "file://"+b.TempDir())
	defer m.Close()
	s, err := m.Register(b.Context(), ref, nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := m.Get(b.Context(), s.Digest); err != nil {
			b.Fatal(err)
		}
	}
}
