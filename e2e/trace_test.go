package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/telemetry"
)

// lcTraced sends a request carrying a fresh W3C traceparent and returns the
// trace id it names.
func lcTraced(t testing.TB, env *testenv.Env, method, path, body string, want int) string {
	t.Helper()
	var tid [16]byte
	var sid [8]byte
	_, _ = rand.Read(tid[:])
	_, _ = rand.Read(sid[:])
	req, err := http.NewRequest(method, env.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("traceparent", "00-"+hex.EncodeToString(tid[:])+"-"+hex.EncodeToString(sid[:])+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return hex.EncodeToString(tid[:])
}

// The trace context survives sender → event → handler: the spans of the
// asynchronous work (pool fill after a challenge creation and after a claim,
// deletions fanned out by a challenge deletion) belong to the trace of the
// request that caused them, through the broker's binary-mode HTTP delivery.
func TestTraceThroughEvents(t *testing.T) {
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	tel, err := telemetry.Setup(ctx, "challfn-e2e", "test", telemetry.WithSpanExporter(exp))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = tel.Shutdown(ctx)
		telemetry.SetDefault(nil)
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
	})
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")

	// spans returns the names of the spans of trace tid, each with the
	// number of times it was seen.
	spans := func(tid string) map[string]int {
		tel.Flush(ctx)
		out := map[string]int{}
		for _, s := range exp.GetSpans() {
			if s.SpanContext.TraceID().String() == tid {
				out[s.Name]++
			}
		}
		return out
	}
	wantSpans := func(what, tid string, want map[string]int) {
		t.Helper()
		got := spans(tid)
		for name, n := range want {
			if got[name] < n {
				t.Fatalf("%s: trace %s has %d span(s) %q, want %d; spans of the trace: %v", what, tid, got[name], name, n, got)
			}
		}
	}

	created := lcTraced(t, env, "POST", "/api/v1/challenge", `{"id":"tr","scenario":"`+ref+`","timeout":"600s","min":"1"}`, http.StatusOK)
	env.Wait()
	wantSpans("pool fill after the challenge creation", created, map[string]int{
		"process io.challfn.pool.fill": 1,
		"pool.fill":                    1,
	})

	claimed := lcTraced(t, env, "POST", "/api/v1/instance", `{"challengeId":"tr","sourceId":"a"}`, http.StatusOK)
	env.Wait()
	wantSpans("refill after the claim", claimed, map[string]int{
		"process io.challfn.pool.fill": 1,
		"pool.fill":                    1,
	})
	if got := spans(created)["pool.fill"]; got != 1 {
		t.Fatalf("the refill's span landed in the creation's trace (%d pool.fill spans there)", got)
	}

	deleted := lcTraced(t, env, "DELETE", "/api/v1/challenge/tr", "", http.StatusOK)
	env.Wait()
	wantSpans("deletions fanned out by the challenge deletion", deleted, map[string]int{
		"process io.challfn.instance.delete": 2,
		"instance.delete":                    2,
	})
	lcWantStacks(t, env, nil)
}
