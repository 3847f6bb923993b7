package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

// ctfd mimics the CTFd plugin ctfd-chall-manager v0.10.1 (docs/contract.md
// §1.9): Python requests with no auth header, a 600 s timeout (5 s for
// the health check), JSON bodies, streamed queries read line by line, and
// chall_manager_exception_builder on every non-2xx (json.loads of the body,
// then code, message and details indexed without guards).
type ctfd struct {
	t    *testing.T
	base string
}

// ctfdError is what the exception builder raises.
type ctfdError struct {
	Status  int
	Code    json.Number
	Message string
	Details []any
}

func (p ctfd) call(timeout time.Duration, method, path string, body any) (*http.Response, []byte) {
	p.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body) // Python's json= argument
		if err != nil {
			p.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.base+path, r)
	if err != nil {
		p.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatal(err)
	}
	return resp, b
}

// do is a unary call: the JSON object on success, the builder's exception
// otherwise. A body the builder cannot index would crash CTFd: a failure.
func (p ctfd) do(method, path string, body any) (map[string]any, *ctfdError) {
	p.t.Helper()
	resp, b := p.call(600*time.Second, method, path, body)
	if resp.StatusCode/100 != 2 {
		var e struct {
			Code    *json.Number `json:"code"`
			Message *string      `json:"message"`
			Details *[]any       `json:"details"`
		}
		if err := json.Unmarshal(b, &e); err != nil || e.Code == nil || e.Message == nil || e.Details == nil {
			p.t.Fatalf("%s %s: %d with a body the plugin cannot parse (%v): %s", method, path, resp.StatusCode, err, b)
		}
		return nil, &ctfdError{resp.StatusCode, *e.Code, *e.Message, *e.Details}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil { // r.json()
		p.t.Fatalf("%s %s: response is not a JSON object (%v): %s", method, path, err, b)
	}
	return m, nil
}

// stream is query_challenges / query_instance: iter_lines, json.loads,
// keep line["result"], skip lines without it.
func (p ctfd) stream(path string) (results []map[string]any, skipped int) {
	p.t.Helper()
	resp, b := p.call(600*time.Second, "GET", path, nil)
	if resp.StatusCode != 200 {
		p.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 { // iter_lines yields empty lines; json.loads would raise
			p.t.Fatalf("GET %s: empty line in the stream", path)
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			p.t.Fatalf("GET %s: line is not JSON: %s", path, line)
		}
		res, ok := m["result"].(map[string]any)
		if !ok {
			skipped++
			continue
		}
		results = append(results, res)
	}
	return results, skipped
}

func (p ctfd) must(method, path string, body any) map[string]any {
	p.t.Helper()
	m, e := p.do(method, path, body)
	if e != nil {
		p.t.Fatalf("%s %s: %d %s %v", method, path, e.Status, e.Message, e.Details)
	}
	return m
}

// One scripted session of the CTFd plugin against challfn: every call it
// makes, with its exact bodies and what it reads back.
func TestCTFdPluginSession(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")
	p := ctfd{t, env.URL}

	// check_chall_manager_healthcheck: own 5 s timeout, any 2xx.
	if resp, b := p.call(5*time.Second, "GET", "/healthcheck", nil); resp.StatusCode/100 != 2 {
		t.Fatalf("healthcheck: %d %s", resp.StatusCode, b)
	}

	// create_challenge: numbers for min/max, null timeout or until, and an
	// updateStrategy that CreateChallengeRequest does not have (ignored).
	p.must("POST", "/api/v1/challenge", map[string]any{
		"id": "42", "scenario": ref, "timeout": "600s", "until": nil,
		"additional": map[string]string{"lang": "fr"}, "min": 0, "max": 0, "updateStrategy": "update_in_place",
	})
	c43 := p.must("POST", "/api/v1/challenge", map[string]any{
		"id": "43", "scenario": ref, "timeout": nil, "until": "2099-07-10T15:00:00Z",
		"additional": map[string]string{}, "min": 0, "max": 0,
	})
	if c43["until"] != "2099-07-10T15:00:00Z" || c43["timeout"] != nil || c43["min"] != "0" {
		t.Errorf("create_challenge 43 echo: %v", c43)
	}
	// get_challenge: an existence probe.
	p.must("GET", "/api/v1/challenge/42", nil)
	if _, e := p.do("GET", "/api/v1/challenge/44", nil); e == nil || e.Status != 404 {
		t.Errorf("get_challenge of an unknown id: %+v", e)
	}

	// create_instance: the whole object is cached and shown.
	in := p.must("POST", "/api/v1/instance", map[string]string{"challengeId": "42", "sourceId": "7"})
	for _, k := range []string{"connectionInfo", "until", "since"} {
		if s, _ := in[k].(string); s == "" {
			t.Errorf("create_instance: %s missing: %v", k, in)
		}
	}
	// A second create (another CTFd worker): 409 whose message the plugin
	// string-matches to say "instance already exists".
	if _, e := p.do("POST", "/api/v1/instance", map[string]string{"challengeId": "42", "sourceId": "7"}); e == nil || e.Status != 409 || !strings.Contains(e.Message, "already exist") {
		t.Errorf("second create_instance: %+v", e)
	}
	// Shared-instance challenges use source 0.
	p.must("POST", "/api/v1/instance", map[string]string{"challengeId": "43", "sourceId": "0"})

	// get_instance: since non-null means it exists; flags are extra static
	// flags accepted on submission.
	got := p.must("GET", "/api/v1/instance/42/7", nil)
	flags, _ := got["flags"].([]any)
	if got["since"] == nil || got["connectionInfo"] != in["connectionInfo"] || got["until"] == nil || len(flags) != 2 {
		t.Errorf("get_instance: %v", got)
	}
	// update_instance (renew) with {}: reads since.
	if r := p.must("PATCH", "/api/v1/instance/42/7", map[string]any{}); r["since"] != got["since"] {
		t.Errorf("renew: since %v → %v", got["since"], r["since"])
	}

	// query_instance (mana): ?sourceId=, lines with a result kept.
	res, skipped := p.stream("/api/v1/instance?sourceId=7")
	if len(res) != 1 || skipped != 0 || res[0]["challengeId"] != "42" || res[0]["sourceId"] != "7" {
		t.Errorf("query_instance 7: %v (skipped %d)", res, skipped)
	}
	if res, _ := p.stream("/api/v1/instance?sourceId=0"); len(res) != 1 || res[0]["challengeId"] != "43" {
		t.Errorf("query_instance 0: %v", res)
	}
	// query_challenges: result → instances → challengeId/sourceId.
	res, skipped = p.stream("/api/v1/challenge")
	seen := map[string]string{}
	for _, c := range res {
		for _, i := range c["instances"].([]any) {
			im := i.(map[string]any)
			seen[im["challengeId"].(string)] = im["sourceId"].(string)
			if _, err := time.Parse(time.RFC3339, strings.Split(im["since"].(string), "T")[0]+"T00:00:00Z"); err != nil {
				t.Errorf("since.split('T') does not give a date: %v", im["since"])
			}
		}
	}
	if len(res) != 2 || skipped != 0 || seen["42"] != "7" || seen["43"] != "0" {
		t.Errorf("query_challenges: %v (skipped %d)", res, skipped)
	}

	// update_challenge: the mask names the camelCase fields present; null in
	// the mask resets; updateStrategy is sent but never masked.
	upd := p.must("PATCH", "/api/v1/challenge/42", map[string]any{
		"timeout": nil, "until": nil, "additional": map[string]string{"lang": "en"},
		"updateMask": "timeout,until,additional", "updateStrategy": "update_in_place",
	})
	if upd["timeout"] != nil || upd["until"] != nil || upd["additional"].(map[string]any)["lang"] != "en" {
		t.Errorf("update_challenge reset: %v", upd)
	}
	got = p.must("GET", "/api/v1/instance/42/7", nil)
	if _, ok := got["until"]; ok || got["connectionInfo"] != in["connectionInfo"] {
		t.Errorf("instance after the reset: %v", got)
	}
	// No timeout: renewal refused, with a body the builder can index.
	if _, e := p.do("PATCH", "/api/v1/instance/42/7", map[string]any{}); e == nil || e.Status != 400 || e.Code != "9" || len(e.Details) != 2 {
		t.Errorf("renew without timeout: %+v", e)
	}
	upd = p.must("PATCH", "/api/v1/challenge/42", map[string]any{"timeout": "300s", "min": 0, "max": 2, "updateMask": "timeout,min,max", "updateStrategy": "update_in_place"})
	if upd["timeout"] != "300s" || upd["max"] != "2" {
		t.Errorf("update_challenge timeout/max: %v", upd)
	}
	if got := p.must("GET", "/api/v1/instance/42/7", nil); got["until"] == nil {
		t.Errorf("until not back after a timeout was set: %v", got)
	}

	// delete_instance: r.json() must parse.
	if m := p.must("DELETE", "/api/v1/instance/42/7", nil); len(m) != 0 {
		t.Errorf("delete_instance: %v", m)
	}
	// Flag submission on a deleted instance: a 404 means "expired".
	if _, e := p.do("GET", "/api/v1/instance/42/7", nil); e == nil || e.Status != 404 {
		t.Errorf("get_instance after delete: %+v", e)
	}
	if res, _ := p.stream("/api/v1/instance?sourceId=7"); len(res) != 0 {
		t.Errorf("query_instance after delete: %v", res)
	}

	// delete_challenge, after the get_challenge probe.
	for _, id := range []string{"42", "43"} {
		p.must("GET", "/api/v1/challenge/"+id, nil)
		if m := p.must("DELETE", "/api/v1/challenge/"+id, nil); len(m) != 0 {
			t.Errorf("delete_challenge %s: %v", id, m)
		}
	}
	env.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}
