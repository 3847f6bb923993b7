package e2e

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

var ctIdentity = regexp.MustCompile(`^[0-9a-f]{16}$`)

// ctInstance is the decoded part of an instance the lifecycle follows.
type ctInstance struct {
	Since, LastRenew time.Time
	Until            *time.Time
	Conn             string
	Flags            []string
	Raw              map[string]any
}

func ctParseInstance(t testing.TB, b []byte) ctInstance {
	t.Helper()
	m := ctObj(t, b)
	in := ctInstance{Raw: m, Since: ctTime(t, m["since"]), LastRenew: ctTime(t, m["lastRenew"])}
	if u, ok := m["until"]; ok {
		ts := ctTime(t, u)
		in.Until = &ts
	}
	in.Conn, _ = m["connectionInfo"].(string)
	fl, ok := m["flags"].([]any)
	if !ok {
		t.Fatalf("flags is not an array: %s", b)
	}
	for _, f := range fl {
		in.Flags = append(in.Flags, f.(string))
	}
	return in
}

func ctPtr[T any](v T) *T { return &v }

// The whole life of a challenge and one instance over HTTP, with the exact
// JSON of every answer (contract §1.3, §4.1–§4.10): create → retrieve →
// query both ways → renew → masked updates (timeout, until, reset,
// additional, scenario) → delete instance → delete challenge, and nothing
// left in etcd or the Pulumi backend.
func TestContractLifecycle(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	add, out := env.Scenario(t, "additional"), env.Scenario(t, "outputs")
	u := env.URL

	// Create and retrieve the challenge: the request echoed, EmitUnpopulated.
	r := ctDo(t, u, "POST", "/api/v1/challenge", `{"id":"life","scenario":"`+add+`","timeout":"600s","additional":{"k":"v"},"unknownField":true}`)
	wantChall := `{"id":"life","scenario":"` + add + `","timeout":"600s","until":null,"instances":[],"additional":{"k":"v"},"min":"0","max":"0"}`
	ctExpect(t, "create challenge", r, 200, wantChall)
	ctExpect(t, "retrieve challenge", ctDo(t, u, "GET", "/api/v1/challenge/life", ""), 200, wantChall)

	// Create the instance: `flag` present because the scenario gives one flag.
	r = ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"life","sourceId":"s1"}`)
	if r.Status != 200 {
		t.Fatalf("create instance: %d %s", r.Status, r.Body)
	}
	in := ctParseInstance(t, r.Body)
	id, _, _ := strings.Cut(in.Conn, "?")
	if !ctIdentity.MatchString(id) {
		t.Fatalf("connection info %q does not start with an identity", in.Conn)
	}
	if in.Until == nil || !in.Until.Equal(in.Since.Add(600*time.Second)) || !in.LastRenew.Equal(in.Since) {
		t.Errorf("times: since %v lastRenew %v until %v", in.Since, in.LastRenew, in.Until)
	}
	want := ctInstanceJSON("life", "s1", in.Since, in.Since, in.Until, id+"?k=v", []string{"CTF{" + id + "}"}, nil)
	ctSame(t, "create instance", r.Body, want)
	if s := env.Stacks(t); !slices.Equal(s, []string{"additional/" + id}) {
		t.Errorf("stacks after create: %v", s)
	}
	ctExpect(t, "retrieve instance", ctDo(t, u, "GET", "/api/v1/instance/life/s1", ""), 200, want)

	// Query the challenges: NDJSON, one {"result":…} line per challenge.
	r = ctDo(t, u, "GET", "/api/v1/challenge", "")
	res := ctResults(t, r.Body)
	if r.Status != 200 || len(res) != 1 || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("query challenges: %d %q %s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	ctSame(t, "query challenges", res[0], strings.Replace(wantChall, `"instances":[]`, `"instances":[`+want+`]`, 1))
	ctExpect(t, "retrieve challenge with instance", ctDo(t, u, "GET", "/api/v1/challenge/life", ""), 200,
		strings.Replace(wantChall, `"instances":[]`, `"instances":[`+want+`]`, 1))

	// Query the instances of a source, both spellings; another source: empty body.
	for _, q := range []string{"sourceId=s1", "source_id=s1", "source_id=s1&unknown=3"} {
		r = ctDo(t, u, "GET", "/api/v1/instance?"+q, "")
		res := ctResults(t, r.Body)
		if r.Status != 200 || len(res) != 1 {
			t.Fatalf("query %s: %d %s", q, r.Status, r.Body)
		}
		ctSame(t, "query "+q, res[0], want)
	}
	for _, q := range []string{"?sourceId=nobody", "", "?sourceId="} {
		r = ctDo(t, u, "GET", "/api/v1/instance"+q, "")
		if r.Status != 200 || len(r.Body) != 0 {
			t.Errorf("query %q: %d %q, want 200 and an empty body", q, r.Status, r.Body)
		}
	}

	// Renew: lastRenew and until move, since does not; no additional (§4.9).
	time.Sleep(10 * time.Millisecond)
	r = ctDo(t, u, "PATCH", "/api/v1/instance/life/s1", `{}`)
	if r.Status != 200 {
		t.Fatalf("renew: %d %s", r.Status, r.Body)
	}
	rn := ctParseInstance(t, r.Body)
	if !rn.LastRenew.After(in.LastRenew) || rn.Until == nil || !rn.Until.Equal(rn.LastRenew.Add(600*time.Second)) {
		t.Errorf("renew times: lastRenew %v → %v, until %v", in.LastRenew, rn.LastRenew, rn.Until)
	}
	ctSame(t, "renew", r.Body, ctInstanceJSON("life", "s1", in.Since, rn.LastRenew, rn.Until, id+"?k=v", []string{"CTF{" + id + "}"}, nil))

	// Masked updates. Every update recomputes until from now (§4.4 step 8).
	patch := func(what, body string) (ctInstance, map[string]any) {
		t.Helper()
		r := ctDo(t, u, "PATCH", "/api/v1/challenge/life", body)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
		c := ctObj(t, r.Body)
		ins, _ := c["instances"].([]any)
		if len(ins) != 1 {
			t.Fatalf("%s: instances %v", what, c["instances"])
		}
		b, _ := json.Marshal(ins[0])
		got := ctParseInstance(t, b)
		ret := ctParseInstance(t, ctDo(t, u, "GET", "/api/v1/instance/life/s1", "").Body)
		if !slices.Equal(got.Flags, ret.Flags) || got.Conn != ret.Conn || (got.Until == nil) != (ret.Until == nil) {
			t.Errorf("%s: response instance %s differs from stored %v", what, b, ret.Raw)
		}
		if !got.Since.Equal(in.Since) {
			t.Errorf("%s: since changed: %v → %v", what, in.Since, got.Since)
		}
		return got, c
	}
	before := time.Now()
	got, c := patch("timeout", `{"timeout":"60s","updateMask":"timeout"}`)
	after := time.Now()
	if c["timeout"] != "60s" || got.Until == nil || got.Until.Before(before.Add(60*time.Second).Truncate(time.Millisecond)) || got.Until.After(after.Add(60*time.Second)) {
		t.Errorf("timeout update: challenge timeout %v, instance until %v (request between %v and %v)", c["timeout"], got.Until, before, after)
	}
	limit := time.Now().Add(30 * time.Second).UTC().Truncate(time.Millisecond)
	got, c = patch("until", `{"until":"`+limit.Format(time.RFC3339Nano)+`","updateMask":"until","timeout":"1s"}`)
	if c["until"] != ctWire(limit) || c["timeout"] != "60s" || got.Until == nil || !got.Until.Equal(limit) {
		t.Errorf("until update: challenge until %v timeout %v (unmasked timeout must not apply), instance until %v, want %v", c["until"], c["timeout"], got.Until, limit)
	}
	got, c = patch("reset until", `{"updateMask":"until"}`)
	if c["until"] != nil || got.Until == nil || got.Until.Sub(time.Now()) < 50*time.Second {
		t.Errorf("until reset: challenge until %v, instance until %v", c["until"], got.Until)
	}
	got, c = patch("no mask", `{"timeout":"5s","additional":{"no":"mask"}}`)
	if c["timeout"] != "60s" || got.Conn != id+"?k=v" {
		t.Errorf("an update without mask changed fields: %v", c)
	}

	// New additional values: the instance is updated in place (same identity).
	updates := ctUpdates(t, env)
	start := time.Now()
	got, c = patch("additional", `{"additional":{"k":"w"},"updateMask":"additional"}`)
	first := time.Since(start)
	if got.Conn != id+"?k=w" || !slices.Equal(got.Flags, []string{"CTF{" + id + "}"}) || got.Raw["flag"] != "CTF{"+id+"}" {
		t.Errorf("additional update: instance %v", got.Raw)
	}
	if len(c["additional"].(map[string]any)) != 1 || got.Raw["additional"] == nil || len(got.Raw["additional"].(map[string]any)) != 0 {
		t.Errorf("additional update: challenge additional %v, instance additional %v", c["additional"], got.Raw["additional"])
	}
	afterFirst := ctUpdates(t, env)
	if afterFirst <= updates {
		t.Errorf("additional update ran no Pulumi update (history %d → %d)", updates, afterFirst)
	}
	// The identical update again: no deployment at all.
	start = time.Now()
	again, _ := patch("additional again", `{"additional":{"k":"w"},"updateMask":"additional"}`)
	second := time.Since(start)
	if again.Conn != got.Conn || ctUpdates(t, env) != afterFirst {
		t.Errorf("identical update was not a no-op: conn %q → %q, history %d → %d", got.Conn, again.Conn, afterFirst, ctUpdates(t, env))
	}
	t.Logf("update of additional: %v; identical update sent again: %v", first, second)

	// A new scenario: another project, new outputs (two flags: no `flag`).
	got, c = patch("scenario", `{"scenario":"`+out+`","updateMask":"scenario"}`)
	if c["scenario"] != out || got.Conn != "nc "+id+".outputs.local 1337" || len(got.Flags) != 2 {
		t.Errorf("scenario update: challenge %v instance %v", c["scenario"], got.Raw)
	}
	if _, ok := got.Raw["flag"]; ok {
		t.Errorf("flag present with two flags: %v", got.Raw)
	}
	if s := env.Stacks(t); !slices.Equal(s, []string{"outputs/" + id}) {
		t.Errorf("stacks after a scenario update: %v (the old project's stack must be gone)", s)
	}

	// Delete the instance, then the challenge: `{}` each, nothing left.
	ctExpect(t, "delete instance", ctDo(t, u, "DELETE", "/api/v1/instance/life/s1", ""), 200, `{}`)
	ctExpect(t, "retrieve deleted instance", ctDo(t, u, "GET", "/api/v1/instance/life/s1", ""), 404, ctInstanceNotFound("life", "s1"))
	if r := ctDo(t, u, "GET", "/api/v1/instance?sourceId=s1", ""); r.Status != 200 || len(r.Body) != 0 {
		t.Errorf("query after delete: %d %s", r.Status, r.Body)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Errorf("stacks after instance delete: %v", s)
	}
	ctExpect(t, "delete challenge", ctDo(t, u, "DELETE", "/api/v1/challenge/life", ""), 200, `{}`)
	ctExpect(t, "retrieve deleted challenge", ctDo(t, u, "GET", "/api/v1/challenge/life", ""), 404, ctChallengeNotFound("life"))
	if r := ctDo(t, u, "GET", "/api/v1/challenge", ""); r.Status != 200 || len(r.Body) != 0 {
		t.Errorf("query challenges after delete: %d %q", r.Status, r.Body)
	}
	env.Broker.Wait()
	if k := env.Keys(t); len(k) != 0 {
		t.Errorf("keys left: %v", k)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Errorf("stacks left: %v", s)
	}
}
