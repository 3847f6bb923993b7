package scenario

import (
	"context"
	"path/filepath"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/challfn/challfn/internal/registry"
)

// TestCacheAttribute checks that the spans say where a scenario came from:
// pulled and compiled (miss), this instance's memory, its cache folder, or
// the shared store.
func TestCacheAttribute(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	defer tp.Shutdown(context.Background())
	traced := func(m *Manager) *Manager { m.tracer = tp.Tracer("test"); return m }

	reg := startRegistry(t, registry.Options{})
	ref := reg.Host() + "/scn/simple:v1"
	dg := mustPush(t, "testdata/simple", ref, RegistryOptions{PlainHTTP: true})
	store := newStore(t)
	a := traced(newManager(t, Config{StoreURL: store}))
	b := traced(newManager(t, Config{StoreURL: store}))

	steps := []struct {
		name string
		run  func() (string, error)
		span string
		want string
	}{
		{"first registration", func() (string, error) { s, err := a.Register(t.Context(), ref, nil); return dir(s), err }, "scenario.register", CacheMiss},
		{"same instance", func() (string, error) { s, err := a.Get(t.Context(), dg); return dir(s), err }, "scenario.get", CacheMemory},
		{"another instance", func() (string, error) { s, err := b.Get(t.Context(), dg); return dir(s), err }, "scenario.get", CacheStore},
		{"its second request", func() (string, error) { s, err := b.Get(t.Context(), dg); return dir(s), err }, "scenario.get", CacheMemory},
	}
	var lastDir string
	for _, st := range steps {
		spans.Reset()
		d, err := st.run()
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		lastDir = d
		if got := cacheOf(spans.GetSpans(), st.span); got != st.want {
			t.Errorf("%s: scenario.cache = %q, want %q", st.name, got, st.want)
		}
	}
	// A restarted instance with the same cache folder (a warm disk).
	c := traced(newManager(t, Config{StoreURL: store, CacheDir: filepath.Dir(filepath.Dir(lastDir))}))
	spans.Reset()
	if _, err := c.Get(t.Context(), dg); err != nil {
		t.Fatal(err)
	}
	if got := cacheOf(spans.GetSpans(), "scenario.get"); got != CacheLocal {
		t.Errorf("restarted instance: scenario.cache = %q, want %q", got, CacheLocal)
	}
}

func dir(s *Scenario) string {
	if s == nil {
		return ""
	}
	return s.Program.Dir
}

func cacheOf(spans tracetest.SpanStubs, name string) string {
	for _, s := range spans {
		if s.Name != name {
			continue
		}
		for _, kv := range s.Attributes {
			if kv.Key == "scenario.cache" {
				return kv.Value.AsString()
			}
		}
	}
	return ""
}
