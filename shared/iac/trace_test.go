package iac

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/telemetry"
)

// TestOperationSpans runs create and destroy on the real engine and checks
// their spans carry the stack, the ids of the context and the engine's
// resource counts from the event log.
func TestOperationSpans(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(context.Background(), "iac-test", "v0", telemetry.WithSpanExporter(spans), telemetry.WithoutGlobal())
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	telemetry.SetDefault(tel)
	defer telemetry.SetDefault(nil)

	e, _ := newTestEngine(t)
	p := scenario(t, "outputs")
	id := identity.New()
	ctx := telemetry.WithIdentity(telemetry.WithChallenge(context.Background(), "web-1"), id)
	if _, err := e.Create(ctx, p, id, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.DestroyStack(ctx, p.Project, id); err != nil {
		t.Fatal(err)
	}
	tel.Flush(ctx)

	want := map[string]string{ // span → resource count attribute that must be > 0
		"pulumi.up":      "pulumi.resources.create",
		"pulumi.destroy": "pulumi.resources.delete",
	}
	for _, s := range spans.GetSpans() {
		key, ok := want[s.Name]
		if !ok {
			continue
		}
		delete(want, s.Name)
		a := map[attribute.Key]attribute.Value{}
		for _, kv := range s.Attributes {
			a[kv.Key] = kv.Value
		}
		if a["pulumi.stack"].AsString() != StackName(p.Project, id) || a["challenge_id"].AsString() != "web-1" || a["identity"].AsString() != id {
			t.Errorf("%s attributes: %v", s.Name, s.Attributes)
		}
		if a[attribute.Key(key)].AsInt64() <= 0 || a["pulumi.resources.total"].AsInt64() < a[attribute.Key(key)].AsInt64() {
			t.Errorf("%s resource counts: %v", s.Name, s.Attributes)
		}
	}
	if len(want) > 0 {
		t.Fatalf("missing spans: %v", want)
	}
}
