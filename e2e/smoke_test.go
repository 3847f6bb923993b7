package e2e

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/challfn/challfn/internal/testenv"
)

// The shortest full lifecycle: it proves the environment itself works.
func TestSmokeLifecycle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")
	must(t, env.URL, "POST", "/api/v1/challenge", `{"id":"smoke","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)
	body := must(t, env.URL, "POST", "/api/v1/instance", `{"challengeId":"smoke","sourceId":"1"}`, http.StatusOK)
	var in struct {
		ConnectionInfo string   `json:"connectionInfo"`
		Flags          []string `json:"flags"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.ConnectionInfo == "" || len(in.Flags) != 2 {
		t.Fatalf("instance %s (%v)", body, err)
	}
	if len(env.Stacks(t)) != 1 {
		t.Fatalf("stacks: %v", env.Stacks(t))
	}
	if body := must(t, env.URL, "DELETE", "/api/v1/challenge/smoke", "", http.StatusOK); string(body) != "{}" {
		t.Fatalf("delete challenge: %s", body)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Fatalf("stacks left: %v", s)
	}
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("keys left: %v", k)
	}
}
