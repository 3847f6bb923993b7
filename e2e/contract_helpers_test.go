package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/internal/testenv"
)

// Helpers of the contract, races, bad-input and CTFd tests. Names start with
// "ct" so they never collide with other test files of the package.

// ctResp is one HTTP answer.
type ctResp struct {
	Status int
	Header http.Header
	Body   []byte
}

// ctDo sends a request to base+path; body "" sends none.
func ctDo(t testing.TB, base, method, path, body string, hdr ...string) ctResp {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := ctClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return ctResp{resp.StatusCode, resp.Header, b}
}

// ctClient never follows redirects: a redirect is an answer to check.
var ctClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{MaxIdleConnsPerHost: 64},
}

// ctDecode parses a JSON body as generic values (numbers kept exact).
func ctDecode(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	if d.More() {
		t.Fatalf("trailing data after JSON value:\n%s", b)
	}
	return v
}

// ctObj parses a JSON object body.
func ctObj(t testing.TB, b []byte) map[string]any {
	t.Helper()
	m, ok := ctDecode(t, b).(map[string]any)
	if !ok {
		t.Fatalf("not a JSON object:\n%s", b)
	}
	return m
}

// ctSame fails unless got and want are the same JSON value (clients parse
// JSON; protojson's spacing is not part of the contract).
func ctSame(t testing.TB, what string, got []byte, want string) {
	t.Helper()
	var g any
	d := json.NewDecoder(bytes.NewReader(got))
	d.UseNumber()
	if err := d.Decode(&g); err != nil || d.More() {
		t.Errorf("%s: body is not one JSON value (%v):\n%s", what, err, got)
		return
	}
	if w := ctDecode(t, []byte(want)); !reflect.DeepEqual(g, w) {
		t.Errorf("%s:\n got %s\nwant %s", what, got, want)
	}
}

// ctExpect checks a status and a golden body.
func ctExpect(t testing.TB, what string, r ctResp, status int, want string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, r.Status, status, r.Body)
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	ctSame(t, what, r.Body, want)
}

// ctErrShape checks what the CTFd plugin's exception builder needs of every
// error: a JSON object with a numeric code, a string message and a details
// array. It returns the parsed body.
func ctErrShape(t testing.TB, what string, r ctResp) map[string]any {
	t.Helper()
	m := ctObj(t, r.Body)
	if _, ok := m["code"].(json.Number); !ok {
		t.Errorf("%s: no numeric code: %s", what, r.Body)
	}
	if _, ok := m["message"].(string); !ok {
		t.Errorf("%s: no string message: %s", what, r.Body)
	}
	if _, ok := m["details"].([]any); !ok {
		t.Errorf("%s: no details array: %s", what, r.Body)
	}
	return m
}

// ctReason is the ErrorInfo reason of an error body ("" without one).
func ctReason(m map[string]any) string {
	ds, _ := m["details"].([]any)
	for _, d := range ds {
		if dm, ok := d.(map[string]any); ok && dm["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" {
			s, _ := dm["reason"].(string)
			return s
		}
	}
	return ""
}

// ctLines splits an NDJSON stream: every line must end with "\n" and be a
// JSON object.
func ctLines(t testing.TB, b []byte) []map[string]any {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Errorf("stream does not end with a newline: %q", b)
	}
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		out = append(out, ctObj(t, l))
	}
	return out
}

// ctResults are the `result` values of stream lines, re-encoded.
func ctResults(t testing.TB, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for _, l := range ctLines(t, b) {
		if len(l) != 1 || l["result"] == nil {
			t.Fatalf("stream line is not {\"result\":…}: %v", l)
		}
		j, err := json.Marshal(l["result"])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, j)
	}
	return out
}

var ctTimestamp = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3}|\.\d{6}|\.\d{9})?Z$`)

// ctTime parses a wire timestamp, checking its form (RFC 3339, UTC `Z`,
// 0/3/6/9 fractional digits).
func ctTime(t testing.TB, v any) time.Time {
	t.Helper()
	s, ok := v.(string)
	if !ok || !ctTimestamp.MatchString(s) {
		t.Fatalf("not a wire timestamp: %#v", v)
	}
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// ctWire renders a time as the wire does.
func ctWire(ts time.Time) string {
	s := ts.UTC().Format("2006-01-02T15:04:05.000000000Z")
	// Trim to 0/3/6/9 fractional digits, as protojson.
	frac := s[20:29]
	switch {
	case frac == "000000000":
		return s[:19] + "Z"
	case strings.HasSuffix(frac, "000000"):
		return s[:23] + "Z"
	case strings.HasSuffix(frac, "000"):
		return s[:26] + "Z"
	}
	return s
}

// ctInstanceJSON is the exact JSON of an instance (docs/contract.md §1.3): until and
// flag omitted when unset, flag present iff exactly one flag.
func ctInstanceJSON(cid, sid string, since, lastRenew time.Time, until *time.Time, conn string, flags []string, additional map[string]string) string {
	m := map[string]any{
		"challengeId":    cid,
		"sourceId":       sid,
		"since":          ctWire(since),
		"lastRenew":      ctWire(lastRenew),
		"connectionInfo": conn,
		"flags":          append([]string{}, flags...),
		"additional":     additional,
	}
	if additional == nil {
		m["additional"] = map[string]string{}
	}
	if until != nil {
		m["until"] = ctWire(*until)
	}
	if len(flags) == 1 {
		m["flag"] = flags[0]
	}
	b, _ := json.Marshal(m)
	return string(b)
}

// Golden error bodies of the contract's catalogue (docs/contract.md §2.2),
// written from that document, not from shared/apierr.
const (
	ctDomain   = "github.com/ctfer-io/chall-manager"
	ctInfoType = "type.googleapis.com/google.rpc.ErrorInfo"
)

func ctQuote(s string) string { b, _ := json.Marshal(s); return string(b) }

func ctInfo(reason, domain string, md map[string]string) string {
	if md == nil {
		md = map[string]string{}
	}
	b, _ := json.Marshal(md)
	return fmt.Sprintf(`{"@type":%q,"reason":%q,"domain":%q,"metadata":%s}`, ctInfoType, reason, domain, b)
}

func ctResource(typ, name, desc string) string {
	return fmt.Sprintf(`{"@type":"type.googleapis.com/google.rpc.ResourceInfo","resourceType":%s,"resourceName":%s,"owner":"","description":%s}`,
		ctQuote(typ), ctQuote(name), ctQuote(desc))
}

func ctPrecondition(typ, subject, desc string) string {
	return fmt.Sprintf(`{"@type":"type.googleapis.com/google.rpc.PreconditionFailure","violations":[{"type":%s,"subject":%s,"description":%s}]}`,
		ctQuote(typ), ctQuote(subject), ctQuote(desc))
}

// ctBadRequest takes (field, reason, description) triples.
func ctBadRequest(fv ...string) string {
	var parts []string
	for i := 0; i+2 < len(fv); i += 3 {
		parts = append(parts, fmt.Sprintf(`{"field":%s,"description":%s,"reason":%s,"localizedMessage":null}`,
			ctQuote(fv[i]), ctQuote(fv[i+2]), ctQuote(fv[i+1])))
	}
	return `{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[` + strings.Join(parts, ",") + `]}`
}

// ctHelp takes (description, url) pairs.
func ctHelp(links ...string) string {
	var parts []string
	for i := 0; i+1 < len(links); i += 2 {
		parts = append(parts, fmt.Sprintf(`{"description":%s,"url":%s}`, ctQuote(links[i]), ctQuote(links[i+1])))
	}
	return `{"@type":"type.googleapis.com/google.rpc.Help","links":[` + strings.Join(parts, ",") + `]}`
}

func ctStatus(code int, msg string, details ...string) string {
	return fmt.Sprintf(`{"code":%d,"message":%s,"details":[%s]}`, code, ctQuote(msg), strings.Join(details, ","))
}

func ctChallengeNotFound(id string) string {
	return ctStatus(5, "Challenge not found.",
		ctInfo("CHALLENGE_NOT_FOUND", ctDomain, map[string]string{"id": id}),
		ctResource("Challenge", id, "No challenge with this ID was found."))
}

func ctChallengeExists(id string) string {
	return ctStatus(6, "Challenge already exists.",
		ctInfo("CHALLENGE_ALREADY_EXISTS", ctDomain, map[string]string{"id": id}),
		ctResource("Challenge", id, "A challenge with this ID already exists."))
}

func ctChallengeExpired(id string) string {
	return ctStatus(9, "Challenge has expired.",
		ctInfo("CHALLENGE_EXPIRED", ctDomain, map[string]string{"id": id}),
		ctPrecondition("EXPIRATION", ctDomain+"/Challenge", "Challenge has expired so can no longer process instance requests."))
}

func ctNoRenewal(id string) string {
	return ctStatus(9, "Challenge does not accept renewal.",
		ctInfo("CHALLENGE_NO_RENEWAL", ctDomain, map[string]string{"id": id}),
		ctPrecondition("RENEWAL", ctDomain+"/Challenge", "Challenge has no timeout thus cannot be renewed."))
}

func ctInstanceMD(cid, sid string) map[string]string {
	return map[string]string{"challenge_id": cid, "source_id": sid}
}

func ctInstanceExists(cid, sid string) string {
	return ctStatus(6, "Instance already exists.",
		ctInfo("INSTANCE_ALREADY_EXISTS", ctDomain, ctInstanceMD(cid, sid)),
		ctResource("Instance", cid+"/"+sid, "An instance with this ID already exists."))
}

func ctInstanceNotFound(cid, sid string) string {
	return ctStatus(5, "Instance not found.",
		ctInfo("INSTANCE_NOT_FOUND", ctDomain, ctInstanceMD(cid, sid)),
		ctResource("Instance", cid+"/"+sid, "No instance with this ID was found."))
}

func ctInstanceExpired(cid, sid string) string {
	return ctStatus(9, "Instance can't be renewed as it expired.",
		ctInfo("INSTANCE_EXPIRED", ctDomain, ctInstanceMD(cid, sid)),
		ctPrecondition("EXPIRATION", ctDomain+"/Instance", "Instance has expired so can no longer process renewal request."))
}

// ctPoolerOOB: md holds the checked bounds; fv are BadRequest triples.
func ctPoolerOOB(md map[string]string, fv ...string) string {
	return ctStatus(3, "Pooler configuration out of bounds.",
		ctInfo("CHALLENGE_POOLER_OUT_OF_BOUNDS", ctDomain, md), ctBadRequest(fv...))
}

func ctInvalidMask(text string) string {
	return ctStatus(3, "Invalid update mask.",
		ctInfo("CHALLENGE_INVALID_UPDATE_MASK", ctDomain, map[string]string{"update-mask": text}),
		ctBadRequest("update-mask", "INVALID_UPDATE_MASK", "The update mask is malformed."),
		ctHelp("Protocol Buffers > Well-Known Types > Field mask", "https://protobuf.dev/reference/protobuf/google.protobuf/#field-mask",
			"AIP-161 Field masks", "https://google.aip.dev/161"))
}

func ctOCINotFound(ref string) string {
	return ctStatus(3, "Registry does not contain reference.",
		ctInfo("OCI_REFERENCE_NOT_FOUND", ctDomain+"/OCI", map[string]string{"reference": ref}),
		ctBadRequest("scenario", "OCI_REFERENCE_NOT_FOUND", "Reference not found."))
}

func ctOCIUnreachable(ref string) string {
	return ctStatus(9, "Registry is not available. You might want to try again later.",
		ctInfo("OCI_INTERACTION", ctDomain+"/OCI", map[string]string{"reference": ref}),
		ctBadRequest("scenario", "OCI_INTERACTION", "Registry is unreachable."))
}

func ctOCIMalformed(ref, desc string) string {
	return ctStatus(3, "OCI reference is malformed.",
		ctInfo("OCI_REFERENCE_MALFORMED", ctDomain, map[string]string{"reference": ref}),
		ctResource("Reference", ref, desc),
		ctHelp("OCI Image Format specification GitHub repository.", "https://github.com/opencontainers/image-spec"))
}

func ctScenarioNonMatching(ref, validation string) string {
	return ctStatus(3, "Scenario does not match specification.",
		ctInfo("SCENARIO_NON_MATCHING_SPECIFICATION", ctDomain, map[string]string{"reference": ref}),
		ctResource("Scenario", ref, "A Pulumi program acting as a challenge instance deployment scenario."),
		ctHelp("Definition of a Scenario.", "https://ctfer.io/docs/chall-manager/glossary/#scenario",
			"Step-by-step guide to create a Scenario.", "https://ctfer.io/docs/chall-manager/challmaker-guides/create-scenario/"),
		ctBadRequest("scenario", "VALIDATION", validation))
}

const (
	ctRouteNotFound    = `{"code":5,"message":"Not Found","details":[]}`
	ctMethodNotAllowed = `{"code":12,"message":"Method Not Allowed","details":[]}`
)

// ctInvalidArg is challfn's own 400 for unusable IDs and bodies.
func ctInvalidArg(field, reason, desc string) string {
	return ctStatus(3, "Invalid argument.",
		ctInfo("INVALID_ARGUMENT", ctDomain, map[string]string{"field": field}),
		ctBadRequest(field, reason, desc))
}

// ctSnapshot is every record key and value under the prefix (locks excluded).
func ctSnapshot(t testing.TB, env *testenv.Env) map[string]string {
	t.Helper()
	keys := env.Keys(t)
	out := make(map[string]string, len(keys))
	if len(keys) == 0 {
		return out
	}
	resp, err := env.Client.Get(t.Context(), env.App.Config.EtcdPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if slices.Contains(keys, string(kv.Key)) {
			out[string(kv.Key)] = string(kv.Value)
		}
	}
	return out
}

// ctUpdates counts the update records (history files) in the file://
// Pulumi backend: each up/destroy adds one, a no-op adds none.
func ctUpdates(t testing.TB, env *testenv.Env) int {
	t.Helper()
	n := 0
	root := filepath.Join(env.Dir, "state")
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if !d.IsDir() && strings.Contains(d.Name(), ".history.json") {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
