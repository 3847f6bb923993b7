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
// JSON of every answer (docs/contract.md §1.3, §4.1–§4.10): create → retrieve →
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
		if r.Status != 200 || len(r.Body) != 0 || r.Header.Get("Content-Type") != "" {
			t.Errorf("query %q: %d %q %v, want 200, an empty body and no Content-Type", q, r.Status, r.Body, r.Header)
		}
	}

	// Renew: lastRenew and until move, since does not; no additional (docs/contract.md §4.9).
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

	// An instance with its own additional values: the scenario gets the
	// challenge's map overlaid by the instance's, the API shows the
	// instance's only (docs/contract.md §4.15), and a renewal shows none (§4.9).
	r = ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"life","sourceId":"s2","additional":{"k":"mine","i":"x"}}`)
	if r.Status != 200 {
		t.Fatalf("create instance with additional: %d %s", r.Status, r.Body)
	}
	in2 := ctParseInstance(t, r.Body)
	id2, _, _ := strings.Cut(in2.Conn, "?")
	ctSame(t, "instance with additional", r.Body, ctInstanceJSON("life", "s2", in2.Since, in2.Since, in2.Until,
		id2+"?i=x&k=mine", []string{"CTF{" + id2 + "}"}, map[string]string{"k": "mine", "i": "x"}))
	r = ctDo(t, u, "PATCH", "/api/v1/instance/life/s2", ``)
	if r.Status != 200 {
		t.Fatalf("renew with an empty body: %d %s", r.Status, r.Body)
	}
	rn2 := ctParseInstance(t, r.Body)
	ctSame(t, "renew of an instance with additional", r.Body, ctInstanceJSON("life", "s2", in2.Since, rn2.LastRenew, rn2.Until,
		id2+"?i=x&k=mine", []string{"CTF{" + id2 + "}"}, nil))
	ctExpect(t, "delete s2", ctDo(t, u, "DELETE", "/api/v1/instance/life/s2", ""), 200, `{}`)

	// Masked updates. Every update recomputes until from now (docs/contract.md §4.4 step 8).
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
	env.Wait()
	if k := env.Keys(t); len(k) != 0 {
		t.Errorf("keys left: %v", k)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Errorf("stacks left: %v", s)
	}
}

// Every error of docs/contract.md §2.2 that the REST surface can produce, with its
// exact body, in the evaluation order of §2.3, over HTTP. Failed calls change
// no stored data.
func TestContractErrors(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	u := env.URL
	ref := env.Scenario(t, "outputs")
	host := env.Registry.Host()

	mustOK := func(what, method, path, body string) []byte {
		t.Helper()
		r := ctDo(t, u, method, path, body)
		if r.Status != 200 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
		return r.Body
	}
	mustOK("challenge e1", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"`+ref+`","timeout":"600s"}`)
	mustOK("challenge e2", "POST", "/api/v1/challenge", `{"id":"e2","scenario":"`+ref+`"}`)
	// Two flags (outputs exports flag + flags): no `flag` key, no until.
	b := mustOK("instance e2/s1", "POST", "/api/v1/instance", `{"challengeId":"e2","sourceId":"s1"}`)
	in := ctParseInstance(t, b)
	if _, ok := in.Raw["flag"]; ok || len(in.Flags) != 2 || in.Until != nil {
		t.Errorf("instance of a challenge without timeout: %s", b)
	}
	if _, ok := in.Raw["until"]; ok {
		t.Errorf("until present (must be omitted): %s", b)
	}
	mustOK("instance e1/s1", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s1"}`)

	type tc struct {
		name, method, path, body string
		status                   int
		want                     string
	}
	run := func(cases []tc) {
		t.Helper()
		for _, c := range cases {
			before := ctSnapshot(t, env)
			r := ctDo(t, u, c.method, c.path, c.body)
			ctExpect(t, c.name, r, c.status, c.want)
			if after := ctSnapshot(t, env); !ctMapsEqual(before, after) {
				t.Errorf("%s changed stored data:\nbefore %v\nafter  %v", c.name, before, after)
			}
		}
	}
	mm := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	run([]tc{
		// CreateChallenge: pooler bounds, then existence (before any registry work).
		{"create existing, bad bounds", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"` + ref + `","min":-1,"max":-2}`, 400,
			ctPoolerOOB(mm("min", "-1", "max", "-2"),
				"min", "MUST_BE_POSITIVE", "Minimum boundary must be a positive integer.",
				"max", "MUST_BE_POSITIVE", "Maximum boundary must be a positive integer.")},
		{"create inverted bounds", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + ref + `","min":"3","max":2}`, 400,
			ctPoolerOOB(mm("min", "3", "max", "2"), "min", "INVERTED_BOUNDARIES", "When an upper bound is defined, minimum cannot exceed maximum.")},
		{"create existing, malformed ref", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"Not A Ref!!"}`, 409, ctChallengeExists("e1")},
		{"create existing, unreachable registry", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"127.0.0.1:1/x/y:z"}`, 409, ctChallengeExists("e1")},
		// OCI and scenario validation (create).
		{"unknown tag", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + host + `/scenarios/outputs:nope"}`, 400, ctOCINotFound(host + "/scenarios/outputs:nope")},
		{"unknown repository", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + host + `/scenarios/none:v1"}`, 400, ctOCINotFound(host + "/scenarios/none:v1")},
		{"unreachable registry", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"127.0.0.1:1/x/y:z"}`, 400, ctOCIUnreachable("127.0.0.1:1/x/y:z")},
		// RetrieveChallenge, DeleteChallenge.
		{"retrieve missing challenge", "GET", "/api/v1/challenge/zz", "", 404, ctChallengeNotFound("zz")},
		{"delete missing challenge", "DELETE", "/api/v1/challenge/zz", "", 404, ctChallengeNotFound("zz")},
		// UpdateChallenge: mask, then pooler, then existence.
		{"update missing, bad mask", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"foo,min"}`, 400, ctInvalidMask(`paths:"foo" paths:"min"`)},
		{"update missing, map sub-path", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"additional.k"}`, 400, ctInvalidMask(`paths:"additional.k"`)},
		{"update missing, bad bounds", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"min","min":-4,"max":-1}`, 400,
			ctPoolerOOB(mm("min", "-4"), "min", "MUST_BE_POSITIVE", "Minimum boundary must be a positive integer.")},
		{"update missing", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"timeout","timeout":"5s"}`, 404, ctChallengeNotFound("zz")},
		{"update unknown tag", "PATCH", "/api/v1/challenge/e1", `{"updateMask":"scenario","scenario":"` + host + `/scenarios/outputs:nope"}`, 400, ctOCINotFound(host + "/scenarios/outputs:nope")},
		// CreateInstance: challenge, expiry (below), uniqueness.
		{"create instance, missing challenge", "POST", "/api/v1/instance", `{"challengeId":"zz","sourceId":"s1"}`, 404, ctChallengeNotFound("zz")},
		{"create instance twice", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s1"}`, 409, ctInstanceExists("e1", "s1")},
		// RetrieveInstance never looks at the challenge.
		{"retrieve instance, missing challenge", "GET", "/api/v1/instance/zz/s1", "", 404, ctInstanceNotFound("zz", "s1")},
		{"retrieve missing instance", "GET", "/api/v1/instance/e1/s2", "", 404, ctInstanceNotFound("e1", "s2")},
		// RenewInstance: challenge, instance, renewal allowed, expiry.
		{"renew, missing challenge", "PATCH", "/api/v1/instance/zz/s1", `{}`, 404, ctChallengeNotFound("zz")},
		{"renew missing instance", "PATCH", "/api/v1/instance/e1/s2", `{}`, 404, ctInstanceNotFound("e1", "s2")},
		{"renew missing instance, no timeout", "PATCH", "/api/v1/instance/e2/s2", `{}`, 404, ctInstanceNotFound("e2", "s2")},
		{"renew without timeout", "PATCH", "/api/v1/instance/e2/s1", `{}`, 400, ctNoRenewal("e2")},
		// DeleteInstance: challenge, instance.
		{"delete instance, missing challenge", "DELETE", "/api/v1/instance/zz/s1", "", 404, ctChallengeNotFound("zz")},
		{"delete missing instance", "DELETE", "/api/v1/instance/e1/s2", "", 404, ctInstanceNotFound("e1", "s2")},
		// Gateway answers.
		{"unknown route", "GET", "/api/v1/nope", "", 404, ctRouteNotFound},
		{"trailing slash", "GET", "/api/v1/instance/e1/s1/", "", 404, ctRouteNotFound},
		{"too many segments", "GET", "/api/v1/challenge/e1/x", "", 404, ctRouteNotFound},
		{"escaped slash", "GET", "/api/v1/challenge/e%2F1", "", 404, ctRouteNotFound},
		{"one instance segment", "DELETE", "/api/v1/instance/e1", "", 404, ctRouteNotFound},
		{"PUT collection", "PUT", "/api/v1/challenge", `{}`, 501, ctMethodNotAllowed},
		{"DELETE collection", "DELETE", "/api/v1/instance", "", 501, ctMethodNotAllowed},
		{"POST item", "POST", "/api/v1/challenge/e1", `{}`, 501, ctMethodNotAllowed},
		{"PUT instance", "PUT", "/api/v1/instance/e1/s1", `{}`, 501, ctMethodNotAllowed},
	})

	// Errors whose description is the underlying parser or engine text: the
	// text varies, the rest is exact.
	for _, c := range []struct{ name, method, path, body, ref string }{
		{"malformed ref", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"Not A Ref!!"}`, "Not A Ref!!"},
		{"empty ref", "POST", "/api/v1/challenge", `{"id":"e9"}`, ""},
	} {
		before := ctSnapshot(t, env)
		r := ctDo(t, u, c.method, c.path, c.body)
		m := ctErrShape(t, c.name, r)
		desc := ""
		if ds, _ := m["details"].([]any); len(ds) > 1 {
			desc, _ = ds[1].(map[string]any)["description"].(string)
		}
		if desc == "" {
			t.Errorf("%s: no parser text in %s", c.name, r.Body)
		}
		ctExpect(t, c.name, r, 400, ctOCIMalformed(c.ref, desc))
		if !ctMapsEqual(before, ctSnapshot(t, env)) {
			t.Errorf("%s changed stored data", c.name)
		}
	}
	failing := env.Scenario(t, "failing")
	for _, c := range []struct{ name, method, path, body string }{
		{"failing preview on create", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + failing + `"}`},
		{"failing preview on update", "PATCH", "/api/v1/challenge/e1", `{"scenario":"` + failing + `","updateMask":"scenario"}`},
	} {
		before := ctSnapshot(t, env)
		r := ctDo(t, u, c.method, c.path, c.body)
		m := ctErrShape(t, c.name, r)
		ds, _ := m["details"].([]any)
		desc := ""
		if len(ds) == 4 {
			fv, _ := ds[3].(map[string]any)["fieldViolations"].([]any)
			if len(fv) == 1 {
				desc, _ = fv[0].(map[string]any)["description"].(string)
			}
		}
		if desc == "" {
			t.Errorf("%s: no validation text in %s", c.name, r.Body)
		}
		ctExpect(t, c.name, r, 400, ctScenarioNonMatching(failing, desc))
		if !ctMapsEqual(before, ctSnapshot(t, env)) {
			t.Errorf("%s changed stored data", c.name)
		}
	}

	// An unknown strategy number is a 400 (upstream panicked), nothing applied.
	before := ctSnapshot(t, env)
	r := ctDo(t, u, "PATCH", "/api/v1/challenge/e1", `{"updateStrategy":7,"additional":{"x":"y"},"updateMask":"additional"}`)
	if r.Status != 400 || ctReason(ctErrShape(t, "unknown strategy", r)) != "INVALID_ARGUMENT" {
		t.Errorf("unknown strategy: %d %s", r.Status, r.Body)
	}
	if !ctMapsEqual(before, ctSnapshot(t, env)) {
		t.Errorf("unknown strategy changed stored data")
	}

	// Expiry: a challenge whose until passed refuses instances (even for a
	// source that has one: expiry is checked first), still serves retrieves,
	// and renewals are refused as the instance's until passed too.
	mustOK("expire e1", "PATCH", "/api/v1/challenge/e1", `{"until":"2001-02-03T04:05:06Z","updateMask":"until"}`)
	// An instance that expired through its own timeout.
	mustOK("timeout e2", "PATCH", "/api/v1/challenge/e2", `{"timeout":"1s","updateMask":"timeout"}`)
	time.Sleep(1100 * time.Millisecond)
	run([]tc{
		{"create on expired challenge", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s2"}`, 400, ctChallengeExpired("e1")},
		{"create existing on expired challenge", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s1"}`, 400, ctChallengeExpired("e1")},
		{"renew after challenge until", "PATCH", "/api/v1/instance/e1/s1", `{}`, 400, ctInstanceExpired("e1", "s1")},
		{"renew expired instance", "PATCH", "/api/v1/instance/e2/s1", `{}`, 400, ctInstanceExpired("e2", "s1")},
	})
	r = ctDo(t, u, "GET", "/api/v1/instance/e1/s1", "")
	if r.Status != 200 {
		t.Errorf("retrieve of an expired instance: %d %s", r.Status, r.Body)
	} else if got := ctParseInstance(t, r.Body); got.Until == nil || ctWire(*got.Until) != "2001-02-03T04:05:06Z" {
		t.Errorf("expired instance until: %s", r.Body)
	}

	// Health.
	r = ctDo(t, u, "GET", "/healthcheck", "")
	if h := ctObj(t, r.Body); r.Status != 200 || h["status"] != "OK" {
		t.Errorf("healthcheck: %d %s", r.Status, r.Body)
	}

	for _, id := range []string{"e1", "e2"} {
		ctExpect(t, "delete "+id, ctDo(t, u, "DELETE", "/api/v1/challenge/"+id, ""), 200, `{}`)
	}
	env.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}

func ctMapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The examples of docs/contract.md §1.3, produced over HTTP by the real functions,
// and the input forms of §1.2 (int64 as string or number, a timestamp with
// an offset, fractional durations, snake_case names).
func TestContractGoldenExamples(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")
	u := env.URL
	// The fully populated Challenge of docs/contract.md §1.3 (an until in the past: no pool
	// is filled for an expired challenge, so `instances` stays empty).
	want := `{"id":"1","scenario":"` + ref + `","timeout":"90.500s","until":"2025-01-02T03:04:05.120Z","instances":[],"additional":{"k":"v"},"min":"2","max":"4"}`
	ctExpect(t, "create", ctDo(t, u, "POST", "/api/v1/challenge",
		`{"id":"1","scenario":"`+ref+`","timeout":"90.5s","until":"2025-01-02T05:04:05.12+02:00","additional":{"k":"v"},"min":"2","max":4}`), 200, want)
	ctExpect(t, "retrieve", ctDo(t, u, "GET", "/api/v1/challenge/1", ""), 200, want)
	env.Wait()
	if k := env.Keys(t); len(k) != 1 {
		t.Errorf("records of an expired challenge with min 2: %v (no pool expected)", k)
	}
	// snake_case input names.
	ctExpect(t, "snake_case create on expired", ctDo(t, u, "POST", "/api/v1/instance", `{"challenge_id":"1","source_id":"2"}`), 400, ctChallengeExpired("1"))
	ctExpect(t, "snake_case update", ctDo(t, u, "PATCH", "/api/v1/challenge/1", `{"update_mask":"min,max","min":0,"max":"0","update_strategy":2}`), 200,
		strings.Replace(strings.Replace(want, `"min":"2"`, `"min":"0"`, 1), `"max":"4"`, `"max":"0"`, 1))
	ctExpect(t, "delete", ctDo(t, u, "DELETE", "/api/v1/challenge/1", ""), 200, `{}`)
	// The unary error example of docs/contract.md §1.3, verbatim.
	ctExpect(t, "error example", ctDo(t, u, "GET", "/api/v1/challenge/1", ""), 404,
		`{"code":5,"message":"Challenge not found.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CHALLENGE_NOT_FOUND","domain":"github.com/ctfer-io/chall-manager","metadata":{"id":"1"}},{"@type":"type.googleapis.com/google.rpc.ResourceInfo","resourceType":"Challenge","resourceName":"1","owner":"","description":"No challenge with this ID was found."}]}`)
	if k := env.Keys(t); len(k) != 0 {
		t.Errorf("keys left: %v", k)
	}
}
