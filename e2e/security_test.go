package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/registry"
	"github.com/challfn/challfn/shared/scenario"
)

// Access control and secrecy, end to end (issue 7, "Access control"): bearer
// tokens on every route of the real wiring, the registry allow-list,
// registry credentials, what a scenario can see, and what error messages
// and logs may carry.

// secBuffer collects the functions' logs (testenv.Options.Log).
type secBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *secBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *secBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type secResp struct {
	status int
	header http.Header
	body   []byte
}

// secDo sends one request with headers given as "Key: value" strings.
func secDo(t testing.TB, base, method, path, body string, hdr ...string) secResp {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return secResp{resp.StatusCode, resp.Header, b}
}

type secStatus struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Details []json.RawMessage `json:"details"`
}

// secError checks that b is a google.rpc.Status body (the contract's error
// shape) with the given code and returns it.
func secError(t testing.TB, what string, r secResp, status, code int) secStatus {
	t.Helper()
	var s secStatus
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.body)
	}
	if err := json.Unmarshal(r.body, &s); err != nil || s.Details == nil || s.Message == "" {
		t.Fatalf("%s: not in the contract's error shape (%v): %s", what, err, r.body)
	}
	if s.Code != code {
		t.Fatalf("%s: code %d, want %d: %s", what, s.Code, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q", what, ct)
	}
	return s
}

// secNoneOf fails if text contains any of the secrets.
func secNoneOf(t testing.TB, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains the secret %q:\n%s", where, s, secShort(text, s))
		}
	}
}

// secShort is the neighbourhood of needle in text, for failure messages.
func secShort(text, needle string) string {
	i := strings.Index(text, needle)
	lo, hi := max(0, i-300), min(len(text), i+len(needle)+300)
	return text[lo:hi]
}

func TestSecurityBearerTokens(t *testing.T) {
	const oldTok, newTok = "tok-old-4f1c9a", "tok-new-b7e2d0"
	logs := &secBuffer{}
	env := testenv.Start(t, testenv.Options{
		Env: map[string]string{"API_TOKENS": oldTok + ",\n" + newTok},
		Log: logs,
	})
	ref := env.Scenario(t, "outputs")

	ce := func(typ string) []string {
		return []string{"Ce-Id: 1", "Ce-Source: //test", "Ce-Specversion: 1.0", "Ce-Type: " + typ, "Content-Type: application/json"}
	}
	routes := []struct {
		method, path, body string
		hdr                []string
	}{
		{"POST", "/api/v1/challenge", `{"id":"x","scenario":"` + ref + `"}`, nil},
		{"GET", "/api/v1/challenge", "", nil},
		{"GET", "/api/v1/challenge/x", "", nil},
		{"PATCH", "/api/v1/challenge/x", `{"timeout":"60s"}`, nil},
		{"DELETE", "/api/v1/challenge/x", "", nil},
		{"POST", "/api/v1/instance", `{"challengeId":"x","sourceId":"1"}`, nil},
		{"GET", "/api/v1/instance?sourceId=1", "", nil},
		{"GET", "/api/v1/instance/x/1", "", nil},
		{"POST", "/api/v1/instance/x/1", `{}`, nil},
		{"DELETE", "/api/v1/instance/x/1", "", nil},
		{"POST", instance.EventsPath, `{"challengeId":"x","identity":"0123456789abcdef"}`, ce(events.TypeInstanceDelete)},
		{"POST", allinone.JanitorPath, `{}`, ce(events.TypeJanitorRun)},
		{"POST", allinone.BrokerPath, `{"challengeId":"x","identity":"0123456789abcdef"}`, ce(events.TypeInstanceDelete)},
	}
	for _, auth := range []struct{ name, header string }{
		{"no token", ""},
		{"wrong token", "Authorization: Bearer tok-wrong"},
		{"empty bearer", "Authorization: Bearer "},
		{"token as basic", "Authorization: Basic " + oldTok},
		{"lowercase scheme", "Authorization: bearer " + oldTok},
		{"token with suffix", "Authorization: Bearer " + oldTok + "x"},
		{"both tokens", "Authorization: Bearer " + oldTok + "," + newTok},
	} {
		for _, rt := range routes {
			hdr := rt.hdr
			if auth.header != "" {
				hdr = append(append([]string{}, hdr...), auth.header)
			}
			r := secDo(t, env.URL, rt.method, rt.path, rt.body, hdr...)
			what := auth.name + ": " + rt.method + " " + rt.path
			s := secError(t, what, r, http.StatusUnauthorized, 16)
			if s.Message != "Unauthenticated." || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%s: %s (WWW-Authenticate %q)", what, r.body, r.header.Get("WWW-Authenticate"))
			}
		}
	}
	// Nothing was done by the refused requests.
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("refused requests left records: %v", k)
	}

	// The health endpoint stays open for probes.
	if r := secDo(t, env.URL, "GET", "/healthcheck", ""); r.status != 200 {
		t.Fatalf("healthcheck without a token: %d %s", r.status, r.body)
	}

	// Both tokens of a rotation work, on every kind of route.
	for i, tok := range []string{oldTok, newTok} {
		auth := "Authorization: Bearer " + tok
		id := []string{"tok-a", "tok-b"}[i]
		// min 1: the pool fill travels as an event through the broker to
		// /events, which must get through the token check too.
		if r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"`+id+`","scenario":"`+ref+`","min":1,"max":2}`, auth); r.status != 200 {
			t.Fatalf("create challenge with %s: %d %s", tok, r.status, r.body)
		}
		env.Wait()
		if r := secDo(t, env.URL, "POST", "/api/v1/instance", `{"challengeId":"`+id+`","sourceId":"s"}`, auth); r.status != 200 {
			t.Fatalf("create instance with %s: %d %s", tok, r.status, r.body)
		}
		if r := secDo(t, env.URL, "GET", "/api/v1/instance/"+id+"/s", "", auth); r.status != 200 {
			t.Fatalf("retrieve instance with %s: %d %s", tok, r.status, r.body)
		}
		if r := secDo(t, env.URL, "GET", "/api/v1/challenge", "", auth); r.status != 200 || !bytes.Contains(r.body, []byte(id)) {
			t.Fatalf("query challenges with %s: %d %s", tok, r.status, r.body)
		}
	}
	env.Wait()
	if delivered, dropped := env.Broker.Stats(); dropped != 0 || delivered == 0 {
		t.Fatalf("broker: %d events delivered, %d dropped (events must carry the token)", delivered, dropped)
	}
	// The claims took the pooled instances; the pools refilled through events.
	if n := len(env.Stacks(t)); n != 4 {
		t.Fatalf("stacks: %v, want 2 claimed + 2 refilled", env.Stacks(t))
	}
	// A garbage event with the right token is refused for what it is (400),
	// not for lack of a token.
	auth := "Authorization: Bearer " + newTok
	if r := secDo(t, env.URL, "POST", instance.EventsPath, `{"nope":`, append(ce(events.TypePoolFill), auth)...); r.status != 400 {
		t.Fatalf("malformed event with the token: %d %s", r.status, r.body)
	}
	if r := secDo(t, env.URL, "POST", allinone.JanitorPath, `{}`, append(ce(events.TypeJanitorRun), auth)...); r.status/100 != 2 {
		t.Fatalf("janitor with the token: %d %s", r.status, r.body)
	}
	env.Wait()
	for _, id := range []string{"tok-a", "tok-b"} {
		if r := secDo(t, env.URL, "DELETE", "/api/v1/challenge/"+id, "", auth); r.status != 200 {
			t.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
	}
	env.Wait()
	if s := env.Stacks(t); len(s) != 0 {
		t.Fatalf("stacks left: %v", s)
	}
	secNoneOf(t, "logs", logs.String(), oldTok, newTok)
}

func TestSecurityRegistryAllowList(t *testing.T) {
	reg, err := registry.Start(context.Background(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	// Hosts compare case-insensitively; entries are trimmed.
	env := testenv.Start(t, testenv.Options{Registry: reg, Env: map[string]string{
		"OCI_ALLOWED_REGISTRIES": "registry.example.com, " + strings.ToUpper(reg.Host()),
	}})
	ref := env.Scenario(t, "outputs")
	if r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"allowed","scenario":"`+ref+`"}`); r.status != 200 {
		t.Fatalf("allowed registry: %d %s", r.status, r.body)
	}

	// Another registry that serves the very same scenario is refused before
	// any connection: the allow-list names hosts, not content.
	other, err := registry.Start(context.Background(), registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	otherRef := other.Host() + "/scenarios/outputs:latest"
	if _, err := scenario.Push(context.Background(), filepath.Join(testenv.Root(), "scenarios", "outputs"), otherRef, scenario.RegistryOptions{PlainHTTP: true}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, ref string }{
		{"other registry serving the scenario", otherRef},
		{"unreachable registry", "127.0.0.1:1/scenarios/outputs:latest"},
		{"allowed host on another port", strings.Split(reg.Host(), ":")[0] + ":1/scenarios/outputs:latest"},
		{"docker hub", "docker.io/library/outputs:latest"},
		{"allowed host as a path prefix", "registry.example.com.evil.test/x:latest"},
	} {
		body, _ := json.Marshal(map[string]string{"id": "refused", "scenario": tc.ref})
		r := secDo(t, env.URL, "POST", "/api/v1/challenge", string(body))
		s := secError(t, tc.name, r, http.StatusBadRequest, 3)
		if s.Message != "Scenario does not match specification." || !bytes.Contains(r.body, []byte("not in the allowed registries")) {
			t.Fatalf("%s: %s", tc.name, r.body)
		}
	}
	// Updating an allowed challenge to a refused registry is refused too.
	body, _ := json.Marshal(map[string]string{"scenario": otherRef, "updateMask": "scenario"})
	secError(t, "update to another registry", secDo(t, env.URL, "PATCH", "/api/v1/challenge/allowed", string(body)), http.StatusBadRequest, 3)
	if r := secDo(t, env.URL, "DELETE", "/api/v1/challenge/allowed", ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("keys left: %v", k)
	}
}

// Registry credentials come from the environment (or their _FILE), work,
// and never show in answers or logs, even when the registry refuses them.
func TestSecurityRegistryCredentials(t *testing.T) {
	const user, pass = "ctf-admin", "registry-pass-Zq81x"
	reg, err := registry.Start(context.Background(), registry.Options{Username: user, Password: pass})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	ref := reg.Host() + "/scenarios/outputs:latest"
	if _, err := scenario.Push(context.Background(), filepath.Join(testenv.Root(), "scenarios", "outputs"), ref,
		scenario.RegistryOptions{PlainHTTP: true, Username: user, Password: pass}); err != nil {
		t.Fatal(err)
	}
	const wrong = "wrong-pass-Kf72m"
	passFile := filepath.Join(t.TempDir(), "oci-password")
	if err := os.WriteFile(passFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		env    map[string]string
		status int
	}{
		{"no credentials", nil, 400},
		{"wrong password", map[string]string{"OCI_USERNAME": user, "OCI_PASSWORD": wrong}, 400},
		{"password from a file", map[string]string{"OCI_USERNAME": user, "OCI_PASSWORD_FILE": passFile}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &secBuffer{}
			env := testenv.Start(t, testenv.Options{Registry: reg, Env: tc.env, Log: logs})
			r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"creds","scenario":"`+ref+`"}`)
			if tc.status == 200 {
				if r.status != 200 {
					t.Fatalf("%d %s", r.status, r.body)
				}
			} else {
				s := secError(t, tc.name, r, tc.status, 9)
				if !strings.Contains(s.Message, "requires authentication") {
					t.Fatalf("message %q", s.Message)
				}
			}
			secNoneOf(t, "answer", string(r.body), pass, wrong)
			secNoneOf(t, "logs", logs.String(), pass, wrong)
		})
	}
}

// A scenario sees its identity, never the source id, and none of challfn's
// own secrets even when they are in the function's environment (as they are
// in production, where the configuration comes from the environment).
func TestSecurityScenarioSees(t *testing.T) {
	secrets := map[string]string{
		"API_TOKENS":    "api-token-Vb61s",
		"OCI_USERNAME":  "oci-user-Hm20q",
		"OCI_PASSWORD":  "oci-pass-Lr93w",
		"ETCD_PASSWORD": "etcd-pass-Tc48e",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	const passphrase = "passphrase-Jw57k"
	env := testenv.Start(t, testenv.Options{Env: map[string]string{"PULUMI_CONFIG_PASSPHRASE": passphrase}})
	ref := env.Scenario(t, "hostile")
	if r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"sees","scenario":"`+ref+`","additional":{"chall":"value-Pd30"}}`); r.status != 200 {
		t.Fatalf("create challenge: %d %s", r.status, r.body)
	}
	const source = "team-source-id-Ux94"
	r := secDo(t, env.URL, "POST", "/api/v1/instance", `{"challengeId":"sees","sourceId":"`+source+`","additional":{"mode":"dump"}}`)
	if r.status != 200 {
		t.Fatalf("create instance: %d %s", r.status, r.body)
	}
	var in struct {
		ConnectionInfo string `json:"connectionInfo"`
	}
	if err := json.Unmarshal(r.body, &in); err != nil {
		t.Fatal(err)
	}
	var seen struct {
		Env    []string `json:"env"`
		Config string   `json:"config"`
		Stack  string   `json:"stack"`
	}
	if err := json.Unmarshal([]byte(in.ConnectionInfo), &seen); err != nil || len(seen.Env) == 0 {
		t.Fatalf("the scenario's dump is unreadable (%v): %s", err, in.ConnectionInfo)
	}
	// It does see what it is meant to: its identity and the additional values.
	if !ctIdentity.MatchString(seen.Stack) || !strings.Contains(seen.Config, seen.Stack) || !strings.Contains(seen.Config, "value-Pd30") {
		t.Fatalf("identity or additional missing from what the scenario sees: %s", in.ConnectionInfo)
	}
	secNoneOf(t, "what the scenario sees", in.ConnectionInfo, source, passphrase,
		secrets["API_TOKENS"], secrets["OCI_USERNAME"], secrets["OCI_PASSWORD"], secrets["ETCD_PASSWORD"])
	if r := secDo(t, env.URL, "DELETE", "/api/v1/challenge/sees", ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
}

// What a failing scenario prints reaches neither the answers nor the logs
// when it is a secret; engine output reaches the answers only with
// CHALLFN_DEBUG=true.
func TestSecurityErrorMessages(t *testing.T) {
	t.Setenv("OCI_PASSWORD", "oci-pass-Gs17d")
	const passphrase = "passphrase-Nq38v"
	for _, debug := range []bool{false, true} {
		name := map[bool]string{false: "default", true: "debug"}[debug]
		t.Run(name, func(t *testing.T) {
			logs := &secBuffer{}
			env := testenv.Start(t, testenv.Options{Log: logs, Env: map[string]string{
				"PULUMI_CONFIG_PASSPHRASE": passphrase,
				"CHALLFN_DEBUG":            map[bool]string{false: "false", true: "true"}[debug],
			}})
			root := testenv.Root()
			internal := []string{root, env.Dir, env.App.Config.CacheDir, os.TempDir() + "/", "goroutine ", ".go:"}

			// A scenario failing at registration: upstream's VALIDATION detail
			// carries the program's error (what a ChallMaker needs to fix it),
			// but no internal path or stack.
			failing := env.Scenario(t, "failing")
			r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"failing","scenario":"`+failing+`"}`)
			s := secError(t, "failing scenario", r, 400, 3)
			if s.Message != "Scenario does not match specification." || !bytes.Contains(r.body, []byte("this scenario fails on purpose")) {
				t.Fatalf("failing scenario: %s", r.body)
			}
			secNoneOf(t, "failing scenario answer", string(r.body), internal...)

			hostile := env.Scenario(t, "hostile")
			if r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"hostile","scenario":"`+hostile+`"}`); r.status != 200 {
				t.Fatalf("create challenge: %d %s", r.status, r.body)
			}
			for _, mode := range []string{"leak", "panic"} {
				r := secDo(t, env.URL, "POST", "/api/v1/instance", `{"challengeId":"hostile","sourceId":"`+mode+`","additional":{"mode":"`+mode+`"}}`)
				s := secError(t, mode, r, 500, 2)
				if !strings.HasPrefix(s.Message, "Deployment of the instance failed") {
					t.Fatalf("%s: message %q", mode, s.Message)
				}
				if debug {
					// The summary names what failed.
					if !strings.Contains(s.Message, "LEAK") {
						t.Fatalf("%s with debug: the message does not carry the engine summary: %q", mode, s.Message)
					}
				} else {
					secNoneOf(t, mode+" answer", string(r.body), append(internal, "LEAK")...)
				}
				secNoneOf(t, mode+" answer", string(r.body), passphrase, "oci-pass-Gs17d")
			}
			if s := env.Stacks(t); len(s) != 0 {
				t.Fatalf("failed creates left stacks: %v", s)
			}
			secNoneOf(t, "logs", logs.String(), passphrase, "oci-pass-Gs17d")
		})
	}
}
