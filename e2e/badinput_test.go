package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
)

// Bad input on every route: a clear 4xx in the contract's error shape (code,
// message, details always present), the exact body where the contract or
// challfn's catalogue fixes it, and no change to any stored record.
func TestBadInput(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	u := env.URL
	ref := env.Scenario(t, "outputs")
	for _, c := range []struct{ path, body string }{
		{"/api/v1/challenge", `{"id":"bad","scenario":"` + ref + `","timeout":"600s","min":"0","max":"3"}`},
		{"/api/v1/instance", `{"challengeId":"bad","sourceId":"s1"}`},
	} {
		if r := ctDo(t, u, "POST", c.path, c.body); r.Status != 200 {
			t.Fatalf("setup %s: %d %s", c.path, r.Status, r.Body)
		}
	}
	long := strings.Repeat("x", 257)
	mm := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	const (
		gateway = "gateway" // protojson/parse text, code 3, no details
		any4xx  = "any"     // any 4xx in the contract's shape
	)
	tooLarge := ctInvalidArg("body", "TOO_LARGE", "The request body exceeds the maximum size of 1048576 bytes.")
	const (
		minTooLarge = "Minimum boundary must be at most 100 (POOL_MIN_LIMIT): pooled instances are deployed before any player asks."
		maxTooLarge = "Maximum boundary must be at most 100000 (POOL_MAX_LIMIT)."
	)
	badTimeout := ctInvalidArg("timeout", "OUT_OF_RANGE", "The timeout must be between 1s and 87600h (10 years).")
	badUntil := ctInvalidArg("until", "OUT_OF_RANGE", "The until date must be before 2200-01-01T00:00:00Z.")
	bigValue := strings.Repeat("v", 200<<10)
	additionalTooLarge := func(m map[string]string) string {
		if m == nil {
			m = map[string]string{"k": bigValue}
		}
		return ctInvalidArg("additional", "TOO_LARGE", fmt.Sprintf(
			"The additional values take %d bytes once encoded for the scenario, more than the 65536 allowed (ADDITIONAL_MAX_BYTES).", api.AdditionalSize(m)))
	}
	big := `{"id":"big","scenario":"` + ref + `","additional":{"k":"` + strings.Repeat("a", 1<<20) + `"}}`
	cases := []struct {
		name, method, path, body string
		status                   int
		want                     string // golden body, gateway or any4xx
	}{
		// Malformed JSON and wrong types (the gateway's 400).
		{"truncated JSON", "POST", "/api/v1/challenge", `{"id":"n"`, 400, gateway},
		{"not JSON", "POST", "/api/v1/challenge", `id=n`, 400, gateway},
		{"array body", "POST", "/api/v1/challenge", `[]`, 400, gateway},
		// The gateway's decoder reads one JSON value and ignores what follows
		// (as upstream): here the decoded request then fails validation.
		{"trailing garbage", "POST", "/api/v1/challenge", `{"id":"n"}x`, 400, any4xx},
		{"number id", "POST", "/api/v1/challenge", `{"id":1,"scenario":"` + ref + `"}`, 400, gateway},
		{"string min", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","min":"abc"}`, 400, gateway},
		{"fractional min", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","min":1.5}`, 400, gateway},
		{"int64 overflow", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","max":"9223372036854775808"}`, 400, gateway},
		{"Go duration", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","timeout":"10m"}`, 400, gateway},
		{"bad timestamp", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","until":"tomorrow"}`, 400, gateway},
		{"additional of numbers", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","additional":{"k":1}}`, 400, gateway},
		{"additional array", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","additional":["k"]}`, 400, gateway},
		{"number source", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":2}`, 400, gateway},
		{"truncated instance", "POST", "/api/v1/instance", `{"challengeId":`, 400, gateway},
		{"renew truncated", "PATCH", "/api/v1/instance/bad/s1", `{`, 400, gateway},
		{"renew wrong type", "PATCH", "/api/v1/instance/bad/s1", `{"sourceId":["s1"]}`, 400, gateway},
		{"update truncated", "PATCH", "/api/v1/challenge/bad", `{"updateMask":`, 400, gateway},
		// Pooler bounds (docs/contract.md §3.4).
		{"negative min", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","min":-1}`, 400,
			ctPoolerOOB(mm("min", "-1", "max", "0"), "min", "MUST_BE_POSITIVE", "Minimum boundary must be a positive integer.")},
		{"negative max", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","max":"-1"}`, 400,
			ctPoolerOOB(mm("min", "0", "max", "-1"), "max", "MUST_BE_POSITIVE", "Maximum boundary must be a positive integer.")},
		{"inverted bounds", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","min":4,"max":1}`, 400,
			ctPoolerOOB(mm("min", "4", "max", "1"), "min", "INVERTED_BOUNDARIES", "When an upper bound is defined, minimum cannot exceed maximum.")},
		{"update negative min", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"min","min":-2}`, 400,
			ctPoolerOOB(mm("min", "-2"), "min", "MUST_BE_POSITIVE", "Minimum boundary must be a positive integer.")},
		{"update inverted", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"min,max","min":5,"max":2}`, 400,
			ctPoolerOOB(mm("min", "5", "max", "2"), "min", "INVERTED_BOUNDARIES", "When an upper bound is defined, minimum cannot exceed maximum.")},
		// Ceilings of the pool (POOL_MIN_LIMIT 100, POOL_MAX_LIMIT 100000 by default):
		// pooled instances are deployed ahead of any player.
		{"min over the ceiling", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","min":20000}`, 400,
			ctPoolerOOB(mm("min", "20000", "max", "0"), "min", "TOO_LARGE", minTooLarge)},
		{"min 2^62", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","min":"4611686018427387904","max":"4611686018427387904"}`, 400,
			ctPoolerOOB(mm("min", "4611686018427387904", "max", "4611686018427387904"), "min", "TOO_LARGE", minTooLarge, "max", "TOO_LARGE", maxTooLarge)},
		{"update min over the ceiling", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"min","min":101}`, 400,
			ctPoolerOOB(mm("min", "101"), "min", "TOO_LARGE", minTooLarge)},
		{"update max over the ceiling", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"max","max":100001}`, 400,
			ctPoolerOOB(mm("max", "100001"), "max", "TOO_LARGE", maxTooLarge)},
		// Expiry settings: instances born expired, durations beyond what can be stored.
		{"zero timeout", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","timeout":"0s"}`, 400, badTimeout},
		{"negative timeout", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","timeout":"-5s"}`, 400, badTimeout},
		{"sub-second timeout", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","timeout":"0.5s"}`, 400, badTimeout},
		{"overflowing timeout", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","timeout":"315576000000s"}`, 400, badTimeout},
		{"update zero timeout", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"timeout","timeout":"0s"}`, 400, badTimeout},
		{"until beyond 2200", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","until":"9999-12-31T00:00:00Z"}`, 400, badUntil},
		{"update until beyond 2200", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"until","until":"2300-01-01T00:00:00Z"}`, 400, badUntil},
		// Additional values too large to be handed to a program (ADDITIONAL_MAX_BYTES).
		{"challenge additional too large", "POST", "/api/v1/challenge", `{"id":"n","scenario":"` + ref + `","additional":{"k":"` + bigValue + `"}}`, 400, additionalTooLarge(nil)},
		{"update additional too large", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"additional","additional":{"k":"` + bigValue + `"}}`, 400, additionalTooLarge(nil)},
		{"instance additional too large", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":"s9","additional":{"k":"` + bigValue + `"}}`, 400, additionalTooLarge(nil)},
		{"escaped additional too large", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":"s9","additional":{"k":"` + strings.Repeat(`\u0001`, 12000) + `"}}`, 400,
			additionalTooLarge(map[string]string{"k": strings.Repeat("\x01", 12000)})},
		// Update masks (docs/contract.md §3.5).
		{"unknown mask path", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"foo","min":1}`, 400, ctInvalidMask(`paths:"foo"`)},
		{"mask into a map", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"additional.k"}`, 400, ctInvalidMask(`paths:"additional.k"`)},
		{"mask into a scalar", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"min.x"}`, 400, ctInvalidMask(`paths:"min.x"`)},
		{"snake_case mask", "PATCH", "/api/v1/challenge/bad", `{"updateMask":"update_strategy"}`, 400, gateway},
		{"object mask", "PATCH", "/api/v1/challenge/bad", `{"updateMask":{"paths":["min"]}}`, 400, gateway},
		{"unknown strategy number", "PATCH", "/api/v1/challenge/bad", `{"updateStrategy":9,"updateMask":"max","max":1}`, 400, any4xx},
		// IDs.
		{"empty id", "POST", "/api/v1/challenge", `{"scenario":"` + ref + `"}`, 400, ctInvalidArg("id", "EMPTY", "The identifier must not be empty.")},
		{"empty body", "POST", "/api/v1/challenge", ``, 400, ctInvalidArg("id", "EMPTY", "The identifier must not be empty.")},
		{"long id", "POST", "/api/v1/challenge", `{"id":"` + long + `","scenario":"` + ref + `"}`, 400, ctInvalidArg("id", "TOO_LONG", "The identifier must be at most 256 bytes long.")},
		{"slash id", "POST", "/api/v1/challenge", `{"id":"a/b","scenario":"` + ref + `"}`, 400, ctInvalidArg("id", "SLASH", "The identifier must not contain '/'.")},
		{"dot-dot id", "POST", "/api/v1/challenge", `{"id":"..","scenario":"` + ref + `"}`, 400, ctInvalidArg("id", "DOT_SEGMENT", `The identifier must not be "." or "..".`)},
		{"control id", "POST", "/api/v1/challenge", `{"id":"a\nb","scenario":"` + ref + `"}`, 400, ctInvalidArg("id", "CONTROL_CHARACTER", "The identifier must not contain control characters.")},
		{"empty source", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":""}`, 400, ctInvalidArg("source_id", "EMPTY", "The identifier must not be empty.")},
		{"empty challenge id", "POST", "/api/v1/instance", `{"sourceId":"s9"}`, 400, ctInvalidArg("challenge_id", "EMPTY", "The identifier must not be empty.")},
		{"long source", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":"` + long + `"}`, 400, ctInvalidArg("source_id", "TOO_LONG", "The identifier must be at most 256 bytes long.")},
		{"traversal source", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":"../s1"}`, 400, ctInvalidArg("source_id", "SLASH", "The identifier must not contain '/'.")},
		{"traversal challenge", "POST", "/api/v1/instance", `{"challengeId":"../bad","sourceId":"s9"}`, 400, ctInvalidArg("challenge_id", "SLASH", "The identifier must not contain '/'.")},
		{"dot-dot source", "POST", "/api/v1/instance", `{"challengeId":"bad","sourceId":".."}`, 400, ctInvalidArg("source_id", "DOT_SEGMENT", `The identifier must not be "." or "..".`)},
		{"escaped dot-dot in path", "DELETE", "/api/v1/challenge/%2E%2E", ``, 400, ctInvalidArg("id", "DOT_SEGMENT", `The identifier must not be "." or "..".`)},
		{"escaped dot-dot instance", "DELETE", "/api/v1/instance/bad/%2E%2E", ``, 400, ctInvalidArg("source_id", "DOT_SEGMENT", `The identifier must not be "." or "..".`)},
		{"long id in path", "PATCH", "/api/v1/challenge/" + long, `{}`, 400, ctInvalidArg("id", "TOO_LONG", "The identifier must be at most 256 bytes long.")},
		{"long source in path", "PATCH", "/api/v1/instance/bad/" + long, `{}`, 400, ctInvalidArg("source_id", "TOO_LONG", "The identifier must be at most 256 bytes long.")},
		{"long id retrieve", "GET", "/api/v1/challenge/" + long, ``, 400, ctInvalidArg("id", "TOO_LONG", "The identifier must be at most 256 bytes long.")},
		{"100 000-character id retrieve", "GET", "/api/v1/challenge/" + strings.Repeat("y", 100000), ``, 400, ctInvalidArg("id", "TOO_LONG", "The identifier must be at most 256 bytes long.")},
		// A stream's error comes as its error line (what grpc-gateway writes for a
		// service error before the first message).
		{"512 KiB source query", "GET", "/api/v1/instance?sourceId=" + strings.Repeat("z", 512<<10), ``, 400, `{"error":` + ctInvalidArg("source_id", "TOO_LONG", "The identifier must be at most 256 bytes long.") + `}`},
		{"control character in source query", "GET", "/api/v1/instance?sourceId=%01", ``, 400, `{"error":` + ctInvalidArg("source_id", "CONTROL_CHARACTER", "The identifier must not contain control characters.") + `}`},
		{"escaped slash in path", "DELETE", "/api/v1/instance/bad/s%2F1", ``, 404, ctRouteNotFound},
		// Query parameters.
		{"repeated source", "GET", "/api/v1/instance?source_id=a&source_id=b", ``, 400, `{"code":3,"message":"too many values for field \"source_id\": a, b","details":[]}`},
		{"sub-path parameter", "GET", "/api/v1/instance?sourceId.x=1", ``, 400, gateway},
		{"unparsable query", "GET", "/api/v1/instance?source_id=%zz", ``, 400, gateway},
		// Bodies over the cap (1 MiB by default).
		{"create challenge over cap", "POST", "/api/v1/challenge", big, 400, tooLarge},
		{"update over cap", "PATCH", "/api/v1/challenge/bad", big, 400, tooLarge},
		{"create instance over cap", "POST", "/api/v1/instance", big, 400, tooLarge},
		{"renew over cap", "PATCH", "/api/v1/instance/bad/s1", big, 400, tooLarge},
	}
	before := ctSnapshot(t, env)
	if len(before) == 0 {
		t.Fatal("no records to protect")
	}
	for _, c := range cases {
		r := ctDo(t, u, c.method, c.path, c.body)
		ctBadCheck(t, c.name, r, c.status, c.want)
	}
	// The same oversized body without Content-Length (chunked): found while
	// reading, same answer.
	for _, path := range []string{"/api/v1/challenge", "/api/v1/instance"} {
		req, err := http.NewRequest("POST", u+path, io.MultiReader(strings.NewReader(big)))
		if err != nil {
			t.Fatal(err)
		}
		if req.ContentLength != 0 {
			t.Fatal("the request has a length: it would not be chunked")
		}
		resp, err := ctClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ctBadCheck(t, "chunked over cap "+path, ctResp{resp.StatusCode, resp.Header, b}, 400, tooLarge)
	}
	// Paths as sent, never cleaned into an HTML redirect: dot segments and
	// empty ones are ids the routes refuse, or no route, in the contract's shape.
	for _, c := range []struct {
		path   string
		status int
	}{
		{"/api/v1/challenge/..", 400}, {"/api/v1/challenge/.", 400}, {"/api/v1/challenge/bad/..", 404},
		{"/api/v1/instance//s1", 404}, {"/api/v1/instance/bad/./s1", 404},
	} {
		r := ctDoRaw(t, u, "DELETE "+c.path)
		ctBadCheck(t, "unclean path "+c.path, r, c.status, any4xx)
	}
	// What Go's HTTP server answers by itself (a request line it cannot
	// parse) is in the contract's shape too.
	for _, line := range []string{"GET /api/v1/instance/%ZZ", "GET /api/v1/challenge/%zz%"} {
		r := ctDoRaw(t, u, line)
		if r.Status != 400 || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %v %s", line, r.Status, r.Header, r.Body)
		}
		ctErrShape(t, line, r)
	}
	if after := ctSnapshot(t, env); !ctMapsEqual(before, after) {
		t.Errorf("bad input changed stored data:\nbefore %v\nafter  %v", before, after)
	}
	// The records are still served as before.
	if r := ctDo(t, u, "GET", "/api/v1/instance/bad/s1", ""); r.Status != 200 {
		t.Errorf("instance after bad input: %d %s", r.Status, r.Body)
	}
	ctExpect(t, "delete", ctDo(t, u, "DELETE", "/api/v1/challenge/bad", ""), 200, `{}`)
	env.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}

func ctBadCheck(t *testing.T, name string, r ctResp, status int, want string) {
	t.Helper()
	if r.Status < 400 || r.Status >= 500 || status != 0 && r.Status != status {
		t.Errorf("%s: status %d (want %d): %s", name, r.Status, status, r.Body)
		return
	}
	if strings.HasPrefix(want, `{"error":`) {
		ctSame(t, name, bytes.TrimSpace(r.Body), want)
		return
	}
	m := ctErrShape(t, name, r)
	switch want {
	case "any":
	case "gateway":
		if fmt.Sprint(m["code"]) != "3" || m["message"] == "" || len(m["details"].([]any)) != 0 {
			t.Errorf("%s: not a gateway decode error: %s", name, r.Body)
		}
	default:
		ctExpect(t, name, r, status, want)
	}
}

// ctDoRaw sends "METHOD target" as written on the wire (Go's client would
// refuse or clean such a target) and reads the answer.
func ctDoRaw(t *testing.T, base, requestLine string) ctResp {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", requestLine)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return ctResp{resp.StatusCode, resp.Header, b}
}
