package e2e

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

// TestFailuresSayWhy: every failure writes one ERROR line with its cause, the challenge,
// the identity and the trace id (no OTLP endpoint is set here), and the body the client
// gets names no server path, host, pid nor backend URL.
func TestFailuresSayWhy(t *testing.T) {
	logs := &secBuffer{}
	env := testenv.Start(t, testenv.Options{Log: logs})
	u := env.URL
	ref := env.Scenario(t, "additional")
	host, _ := os.Hostname()
	mustStatus := func(what string, r ctResp, status int) {
		t.Helper()
		if r.Status != status {
			t.Fatalf("%s: %d %s, want %d", what, r.Status, r.Body, status)
		}
	}
	// clean fails the test when a body carries what only describes the server.
	clean := func(what string, body []byte) {
		t.Helper()
		for _, bad := range []string{"file://", env.Dir, "/tmp/", ".pulumi", "(pid", "@" + host, "challfn-test"} {
			if strings.Contains(string(body), bad) {
				t.Errorf("%s: body carries %q: %s", what, bad, body)
			}
		}
	}
	mustOK := func(what, method, path, body string) []byte {
		t.Helper()
		r := ctDo(t, u, method, path, body)
		mustStatus(what, r, 200)
		return r.Body
	}
	mustOK("register", "POST", "/api/v1/challenge", `{"id":"logs","scenario":"`+ref+`","timeout":"600s"}`)

	t.Run("failed create", func(t *testing.T) {
		r := ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"logs","sourceId":"s1","additional":{"fail":"on purpose"}}`)
		mustStatus("create", r, 500)
		clean("create", r.Body)
		m := regexp.MustCompile(`See trace ([0-9a-f]{32})\.`).FindSubmatch(r.Body)
		if m == nil {
			t.Fatalf("no trace id in %s", r.Body)
		}
		line := oneErrorLine(t, logs, "instance creation failed", "logs", string(m[1]))
		if !strings.Contains(line["error"].(string), "failing on request: on purpose") || line["identity"] == nil {
			t.Errorf("line without the cause or the identity: %v", line)
		}
	})

	t.Run("stack state unreadable", func(t *testing.T) {
		body := mustOK("create", "POST", "/api/v1/instance", `{"challengeId":"logs","sourceId":"s2"}`)
		in := ctParseInstance(t, body)
		identity, _, _ := strings.Cut(in.Conn, "?")
		// The engine then fails with its own message, which names the state file.
		var state string
		_ = filepath.WalkDir(filepath.Join(env.Dir, "state", ".pulumi", "stacks"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Name() == identity+".json" {
				state = p
			}
			return nil
		})
		if state == "" {
			t.Fatalf("no state file for %s", identity)
		}
		good, err := os.ReadFile(state)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(state, []byte("{not a checkpoint"), 0o644); err != nil {
			t.Fatal(err)
		}
		r := ctDo(t, u, "PATCH", "/api/v1/challenge/logs", `{"additional":{"k":"v"},"updateMask":"additional"}`)
		mustStatus("update", r, 500)
		clean("update", r.Body)
		line := oneErrorLine(t, logs, "event io.challfn.instance.update failed", "logs", "")
		if line["identity"] != identity || !strings.Contains(line["error"].(string), identity) {
			t.Errorf("update line without the cause or the identity: %v", line)
		}
		oneErrorLine(t, logs, "challenge update failed", "logs", "")

		r = ctDo(t, u, "DELETE", "/api/v1/instance/logs/s2", "")
		mustStatus("delete", r, 500)
		clean("delete", r.Body)
		oneErrorLine(t, logs, "instance deletion failed", "logs", "")
		if err := os.WriteFile(state, good, 0o644); err != nil {
			t.Fatal(err)
		}
		mustOK("delete", "DELETE", "/api/v1/instance/logs/s2", "")
	})

	t.Run("stack locked by a dead engine", func(t *testing.T) {
		// Its lock is broken at once: the manager only runs the engine on a
		// stack it holds the instance lock of (iac.Config.ExclusiveStacks).
		body := mustOK("create", "POST", "/api/v1/instance", `{"challengeId":"logs","sourceId":"s3"}`)
		in := ctParseInstance(t, body)
		identity, _, _ := strings.Cut(in.Conn, "?")
		lock := filepath.Join(env.Dir, "state", ".pulumi", "locks", "organization", "additional", identity, "5b3c0e2a-0000-4000-8000-000000000001.json")
		if err := os.MkdirAll(filepath.Dir(lock), 0o755); err != nil {
			t.Fatal(err)
		}
		content, _ := json.Marshal(map[string]any{"pid": 4242, "username": "root", "hostname": "challfn-instance-7d9f", "timestamp": time.Now().UTC()})
		if err := os.WriteFile(lock, content, 0o644); err != nil {
			t.Fatal(err)
		}
		mustOK("delete", "DELETE", "/api/v1/instance/logs/s3", "")
		if _, err := os.Stat(lock); !os.IsNotExist(err) {
			t.Errorf("the dead engine's lock is still there: %v", err)
		}
	})

	t.Run("failed pool fill", func(t *testing.T) {
		mustOK("register", "POST", "/api/v1/challenge", `{"id":"logs-pool","scenario":"`+ref+`","additional":{"fail-up":"pool on purpose"},"min":1,"max":2}`)
		env.Wait()
		line := oneErrorLine(t, logs, "event io.challfn.pool.fill failed", "logs-pool", "")
		if !strings.Contains(line["error"].(string), "pool on purpose") || line["identity"] == nil {
			t.Errorf("pool fill line without the cause or the identity: %v", line)
		}
	})

	t.Run("failed preview", func(t *testing.T) {
		r := ctDo(t, u, "POST", "/api/v1/challenge", `{"id":"logs-preview","scenario":"`+ref+`","additional":{"fail":"preview on purpose"}}`)
		mustStatus("register", r, 400)
		clean("register", r.Body)
		line := oneErrorLine(t, logs, "challenge creation failed", "logs-preview", "")
		if !strings.Contains(line["error"].(string), "preview on purpose") {
			t.Errorf("preview line without the cause: %v", line)
		}
	})

	secNoneOf(t, "logs", logs.String(), "challfn-test") // the stacks' passphrase
}

// oneErrorLine returns the single ERROR line of msg for challenge (and trace, if
// given), failing the test when there is none or more than one.
func oneErrorLine(t testing.TB, logs *secBuffer, msg, challenge, trace string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["level"] != "ERROR" || m["msg"] != msg || m["challenge_id"] != challenge {
			continue
		}
		if trace != "" && m["trace_id"] != trace {
			continue
		}
		if _, ok := m["trace_id"].(string); !ok {
			t.Errorf("%s: line without trace id: %v", msg, m)
		}
		found = append(found, m)
	}
	if len(found) != 1 {
		t.Fatalf("%d ERROR lines %q for %s (trace %q), want 1:\n%s", len(found), msg, challenge, trace, fmt.Sprint(found))
	}
	return found[0]
}
