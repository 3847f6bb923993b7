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
	if code, body := env.Do(t, "POST", "/api/v1/challenge", `{"id":"smoke","scenario":"`+ref+`","timeout":"600s"}`); code != http.StatusOK {
		t.Fatalf("create challenge: %d %s", code, body)
	}
	code, body := env.Do(t, "POST", "/api/v1/instance", `{"challengeId":"smoke","sourceId":"1"}`)
	if code != http.StatusOK {
		t.Fatalf("create instance: %d %s", code, body)
	}
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
	if code, body := env.Do(t, "DELETE", "/api/v1/challenge/smoke", ""); code != http.StatusOK || string(body) != "{}" {
		t.Fatalf("delete challenge: %d %s", code, body)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Fatalf("stacks left: %v", s)
	}
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("keys left: %v", k)
	}
}
