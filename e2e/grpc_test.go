package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/registry"
	"github.com/challfn/challfn/shared/scenario"
)

// gcCase is one request sent over both transports.
type gcCase struct {
	name string
	// REST side.
	method, path, body string
	// gRPC side: the full method and its request.
	rpc string
	req any
	// The contract's answer (HTTP status, golden google.rpc.Status JSON).
	status int
	want   string
}

// gcRun sends every case over REST and over gRPC: both must answer the
// golden error (the gRPC status rendered as the gateway renders it), and
// neither may change stored data.
func gcRun(t *testing.T, env *testenv.Env, conn *grpc.ClientConn, cases []gcCase) {
	t.Helper()
	for _, c := range cases {
		before := ctSnapshot(t, env)
		if c.method != "" {
			ctExpect(t, c.name+" (REST)", ctDo(t, env.URL, c.method, c.path, c.body), c.status, c.want)
		}
		var err error
		if strings.HasSuffix(c.rpc, "/QueryInstance") || strings.HasSuffix(c.rpc, "/QueryChallenge") {
			_, err = gcStream[api.Challenge](conn, c.rpc, c.req)
		} else {
			_, err = gcCall[api.Empty](conn, c.rpc, c.req)
		}
		if err == nil {
			t.Errorf("%s (gRPC): no error, want %s", c.name, c.want)
			continue
		}
		ctSame(t, c.name+" (gRPC)", gcStatusJSON(t, err), c.want)
		if after := ctSnapshot(t, env); !ctMapsEqual(before, after) {
			t.Errorf("%s changed stored data:\nbefore %v\nafter  %v", c.name, before, after)
		}
	}
}

// Every error row of docs/contract.md §2.2 that the gRPC services can produce, with
// its code, message and details, in the evaluation order of §2.3; each one
// sent over REST too, where it must be the very same answer.
func TestGRPCErrors(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	conn := gcDial(t, env)
	ref := env.Scenario(t, "outputs")
	host := env.Registry.Host()
	u := env.URL

	mustOK := func(what, method, path, body string) {
		t.Helper()
		if r := ctDo(t, u, method, path, body); r.Status != 200 {
			t.Fatalf("%s: %d %s", what, r.Status, r.Body)
		}
	}
	mustOK("challenge e1", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"`+ref+`","timeout":"600s"}`)
	mustOK("challenge e2", "POST", "/api/v1/challenge", `{"id":"e2","scenario":"`+ref+`"}`)
	mustOK("instance e2/s1", "POST", "/api/v1/instance", `{"challengeId":"e2","sourceId":"s1"}`)
	mustOK("instance e1/s1", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s1"}`)

	mm := func(kv ...string) map[string]string {
		m := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	mask := func(paths ...string) *api.FieldMask { return &api.FieldMask{Paths: paths} }
	inst := func(c, s string) *api.RetrieveInstanceRequest {
		return &api.RetrieveInstanceRequest{ChallengeID: c, SourceID: s}
	}
	gcRun(t, env, conn, []gcCase{
		// CreateChallenge: pooler bounds, then existence, then the registry.
		{"create existing, bad bounds", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"` + ref + `","min":-1,"max":-2}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e1", Scenario: ref, Min: -1, Max: -2}, 400,
			ctPoolerOOB(mm("min", "-1", "max", "-2"),
				"min", "MUST_BE_POSITIVE", "Minimum boundary must be a positive integer.",
				"max", "MUST_BE_POSITIVE", "Maximum boundary must be a positive integer.")},
		{"create inverted bounds", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + ref + `","min":"3","max":2}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: ref, Min: 3, Max: 2}, 400,
			ctPoolerOOB(mm("min", "3", "max", "2"), "min", "INVERTED_BOUNDARIES", "When an upper bound is defined, minimum cannot exceed maximum.")},
		{"create existing, unreachable registry", "POST", "/api/v1/challenge", `{"id":"e1","scenario":"127.0.0.1:1/x/y:z"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e1", Scenario: "127.0.0.1:1/x/y:z"}, 409, ctChallengeExists("e1")},
		{"unknown tag", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + host + `/scenarios/outputs:nope"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: host + "/scenarios/outputs:nope"}, 400, ctOCINotFound(host + "/scenarios/outputs:nope")},
		{"unreachable registry", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"127.0.0.1:1/x/y:z"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: "127.0.0.1:1/x/y:z"}, 400, ctOCIUnreachable("127.0.0.1:1/x/y:z")},
		{"empty id", "POST", "/api/v1/challenge", `{"scenario":"` + ref + `"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{Scenario: ref}, 400, ctInvalidArg("id", "EMPTY", "The identifier must not be empty.")},
		// RetrieveChallenge, DeleteChallenge.
		{"retrieve missing challenge", "GET", "/api/v1/challenge/zz", "",
			gcChallenge + "RetrieveChallenge", &api.RetrieveChallengeRequest{ID: "zz"}, 404, ctChallengeNotFound("zz")},
		{"delete missing challenge", "DELETE", "/api/v1/challenge/zz", "",
			gcChallenge + "DeleteChallenge", &api.DeleteChallengeRequest{ID: "zz"}, 404, ctChallengeNotFound("zz")},
		// UpdateChallenge: mask, then pooler, then existence, then the registry.
		{"update missing, bad mask", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"foo,min"}`,
			gcChallenge + "UpdateChallenge", &api.UpdateChallengeRequest{ID: "zz", UpdateMask: mask("foo", "min")}, 400, ctInvalidMask(`paths:"foo" paths:"min"`)},
		{"update missing, map sub-path", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"additional.k"}`,
			gcChallenge + "UpdateChallenge", &api.UpdateChallengeRequest{ID: "zz", UpdateMask: mask("additional.k")}, 400, ctInvalidMask(`paths:"additional.k"`)},
		{"update missing, bad bounds", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"min","min":-4,"max":-1}`,
			gcChallenge + "UpdateChallenge", &api.UpdateChallengeRequest{ID: "zz", UpdateMask: mask("min"), Min: -4, Max: -1}, 400,
			ctPoolerOOB(mm("min", "-4"), "min", "MUST_BE_POSITIVE", "Minimum boundary must be a positive integer.")},
		{"update missing", "PATCH", "/api/v1/challenge/zz", `{"updateMask":"timeout","timeout":"5s"}`,
			gcChallenge + "UpdateChallenge", &api.UpdateChallengeRequest{ID: "zz", UpdateMask: mask("timeout"), Timeout: ctPtr(5 * time.Second)}, 404, ctChallengeNotFound("zz")},
		{"update unknown tag", "PATCH", "/api/v1/challenge/e1", `{"updateMask":"scenario","scenario":"` + host + `/scenarios/outputs:nope"}`,
			gcChallenge + "UpdateChallenge", &api.UpdateChallengeRequest{ID: "e1", UpdateMask: mask("scenario"), Scenario: ctPtr(host + "/scenarios/outputs:nope")}, 400, ctOCINotFound(host + "/scenarios/outputs:nope")},
		// CreateInstance: challenge, expiry (below), uniqueness.
		{"create instance, missing challenge", "POST", "/api/v1/instance", `{"challengeId":"zz","sourceId":"s1"}`,
			gcInstance + "CreateInstance", &api.CreateInstanceRequest{ChallengeID: "zz", SourceID: "s1"}, 404, ctChallengeNotFound("zz")},
		{"create instance twice", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s1"}`,
			gcInstance + "CreateInstance", &api.CreateInstanceRequest{ChallengeID: "e1", SourceID: "s1"}, 409, ctInstanceExists("e1", "s1")},
		{"create instance, empty source", "POST", "/api/v1/instance", `{"challengeId":"e1"}`,
			gcInstance + "CreateInstance", &api.CreateInstanceRequest{ChallengeID: "e1"}, 400, ctInvalidArg("source_id", "EMPTY", "The identifier must not be empty.")},
		// RetrieveInstance never looks at the challenge.
		{"retrieve instance, missing challenge", "GET", "/api/v1/instance/zz/s1", "",
			gcInstance + "RetrieveInstance", inst("zz", "s1"), 404, ctInstanceNotFound("zz", "s1")},
		{"retrieve missing instance", "GET", "/api/v1/instance/e1/s2", "",
			gcInstance + "RetrieveInstance", inst("e1", "s2"), 404, ctInstanceNotFound("e1", "s2")},
		// RenewInstance: challenge, instance, renewal allowed, expiry (below).
		{"renew, missing challenge", "PATCH", "/api/v1/instance/zz/s1", `{}`,
			gcInstance + "RenewInstance", &api.RenewInstanceRequest{ChallengeID: "zz", SourceID: "s1"}, 404, ctChallengeNotFound("zz")},
		{"renew missing instance", "PATCH", "/api/v1/instance/e1/s2", `{}`,
			gcInstance + "RenewInstance", &api.RenewInstanceRequest{ChallengeID: "e1", SourceID: "s2"}, 404, ctInstanceNotFound("e1", "s2")},
		{"renew without timeout", "PATCH", "/api/v1/instance/e2/s1", `{}`,
			gcInstance + "RenewInstance", &api.RenewInstanceRequest{ChallengeID: "e2", SourceID: "s1"}, 400, ctNoRenewal("e2")},
		// DeleteInstance: challenge, instance.
		{"delete instance, missing challenge", "DELETE", "/api/v1/instance/zz/s1", "",
			gcInstance + "DeleteInstance", &api.DeleteInstanceRequest{ChallengeID: "zz", SourceID: "s1"}, 404, ctChallengeNotFound("zz")},
		{"delete missing instance", "DELETE", "/api/v1/instance/e1/s2", "",
			gcInstance + "DeleteInstance", &api.DeleteInstanceRequest{ChallengeID: "e1", SourceID: "s2"}, 404, ctInstanceNotFound("e1", "s2")},
	})

	// Errors whose description is a parser's or the engine's text: taken from
	// the REST answer, the rest is golden; gRPC must give the same text.
	failing := env.Scenario(t, "failing")
	for _, c := range []struct {
		name, method, path, body string
		rpc                      string
		req                      any
		golden                   func(desc string) string
		desc                     func(details []any) string
	}{
		{"malformed ref", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"Not A Ref!!"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: "Not A Ref!!"},
			func(d string) string { return ctOCIMalformed("Not A Ref!!", d) }, gcDetailDesc(1)},
		{"failing preview on create", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + failing + `"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: failing},
			func(d string) string { return ctScenarioNonMatching(failing, d) }, gcViolationDesc(3)},
		{"failing preview on update", "PATCH", "/api/v1/challenge/e1", `{"scenario":"` + failing + `","updateMask":"scenario"}`,
			gcChallenge + "UpdateChallenge", &api.UpdateChallengeRequest{ID: "e1", Scenario: &failing, UpdateMask: mask("scenario")},
			func(d string) string { return ctScenarioNonMatching(failing, d) }, gcViolationDesc(3)},
	} {
		before := ctSnapshot(t, env)
		r := ctDo(t, u, c.method, c.path, c.body)
		ds, _ := ctErrShape(t, c.name, r)["details"].([]any)
		desc := c.desc(ds)
		if desc == "" {
			t.Errorf("%s: no parser or validation text in %s", c.name, r.Body)
		}
		ctExpect(t, c.name+" (REST)", r, 400, c.golden(desc))
		_, err := gcCall[api.Challenge](conn, c.rpc, c.req)
		if err == nil {
			t.Errorf("%s (gRPC): no error", c.name)
		} else {
			// A preview's text names its throw-away stack, new each time.
			ctSame(t, c.name+" (gRPC)", gcStack.ReplaceAll(gcStatusJSON(t, err), []byte("/<stack>:")),
				string(gcStack.ReplaceAll([]byte(c.golden(desc)), []byte("/<stack>:"))))
		}
		if !ctMapsEqual(before, ctSnapshot(t, env)) {
			t.Errorf("%s changed stored data", c.name)
		}
	}

	// A registry that wants credentials challfn does not have.
	locked, err := registry.Start(context.Background(), registry.Options{Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { locked.Close() })
	lockedRef := locked.Host() + "/scenarios/outputs:latest"
	if _, err := scenario.Push(context.Background(), filepath.Join(testenv.Root(), "scenarios", "outputs"), lockedRef,
		scenario.RegistryOptions{PlainHTTP: true, Username: "u", Password: "p"}); err != nil {
		t.Fatal(err)
	}
	gcRun(t, env, conn, []gcCase{
		{"registry refuses us", "POST", "/api/v1/challenge", `{"id":"e9","scenario":"` + lockedRef + `"}`,
			gcChallenge + "CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: lockedRef}, 400,
			ctStatus(9, "Registry requires authentication. You may not be authorized to use it.",
				ctInfo("OCI_INTERACTION", ctDomain+"/OCI", map[string]string{"reference": lockedRef}),
				ctBadRequest("scenario", "OCI_INTERACTION", "The reference of provided scenario is hosted on a registry that requires authentication, for which credentials did not match."))},
	})

	// A scenario whose Go program does not compile: 500 SCENARIO_PREPROCESSING,
	// whose description is the compiler's output (taken from the REST answer).
	broken := t.TempDir()
	if err := os.CopyFS(broken, os.DirFS(filepath.Join(testenv.Root(), "scenarios", "outputs"))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(broken, "main.go"), []byte("package main\n\nfunc main() { undefinedCall() }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	brokenRef := env.PushDir(t, broken, "broken")
	r0 := ctDo(t, u, "POST", "/api/v1/challenge", `{"id":"e9","scenario":"`+brokenRef+`"}`)
	ds, _ := ctErrShape(t, "broken scenario", r0)["details"].([]any)
	desc := gcDetailDesc(1)(ds)
	if !strings.Contains(desc, "undefinedCall") {
		t.Errorf("broken scenario: no compiler output in %s", r0.Body)
	}
	md, _ := ds[0].(map[string]any)["metadata"].(map[string]any)
	dir, _ := md["directory"].(string)
	preprocessing := ctStatus(13, "Scenario pre-processing failed.",
		ctInfo("SCENARIO_PREPROCESSING", ctDomain, map[string]string{"directory": dir}),
		ctResource("Scenario", brokenRef, desc))
	ctExpect(t, "broken scenario (REST)", r0, 500, preprocessing)
	_, err = gcCall[api.Challenge](conn, gcChallenge+"CreateChallenge", &api.CreateChallengeRequest{ID: "e9", Scenario: brokenRef})
	ctSame(t, "broken scenario (gRPC)", gcStatusJSON(t, err), preprocessing)

	// An unknown strategy number: challfn's 400 (upstream panicked), over both.
	before := ctSnapshot(t, env)
	bad := api.UpdateStrategy(7)
	_, err = gcCall[api.Challenge](conn, gcChallenge+"UpdateChallenge", &api.UpdateChallengeRequest{
		ID: "e1", UpdateStrategy: &bad, Additional: map[string]string{"x": "y"}, UpdateMask: mask("additional")})
	r := ctDo(t, u, "PATCH", "/api/v1/challenge/e1", `{"updateStrategy":7,"additional":{"x":"y"},"updateMask":"additional"}`)
	if r.Status != 400 || status.Code(err) != codes.InvalidArgument {
		t.Errorf("unknown strategy: REST %d %s, gRPC %v", r.Status, r.Body, err)
	} else {
		ctSame(t, "unknown strategy", gcStatusJSON(t, err), string(r.Body))
	}
	if !ctMapsEqual(before, ctSnapshot(t, env)) {
		t.Errorf("unknown strategy changed stored data")
	}

	// A deployment that fails: UNKNOWN (code 2, HTTP 500) with a message that
	// names what failed and the trace (upstream sends the raw engine text).
	hostile := env.Scenario(t, "hostile")
	mustOK("challenge hostile", "POST", "/api/v1/challenge", `{"id":"hostile","scenario":"`+hostile+`"}`)
	r = ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"hostile","sourceId":"rest","additional":{"mode":"leak"}}`)
	restErr := ctErrShape(t, "failed deployment (REST)", r)
	_, err = gcCall[api.Instance](conn, gcInstance+"CreateInstance", &api.CreateInstanceRequest{ChallengeID: "hostile", SourceID: "grpc", Additional: map[string]string{"mode": "leak"}})
	st := status.Convert(err)
	const failed = "Deployment of the instance failed"
	if r.Status != 500 || restErr["code"] != json.Number("2") || st.Code() != codes.Unknown ||
		!strings.HasPrefix(restErr["message"].(string), failed) || !strings.HasPrefix(st.Message(), failed) || len(st.Details()) != 0 {
		t.Errorf("failed deployment: REST %d %s; gRPC %v %q %v", r.Status, r.Body, st.Code(), st.Message(), st.Details())
	}
	if s := env.Stacks(t); len(s) != 2 {
		t.Errorf("failed creates left stacks: %v", s)
	}

	// Expiry: an expired challenge refuses instances, renewals are refused
	// once the instance's until has passed.
	mustOK("expire e1", "PATCH", "/api/v1/challenge/e1", `{"until":"2001-02-03T04:05:06Z","updateMask":"until"}`)
	mustOK("timeout e2", "PATCH", "/api/v1/challenge/e2", `{"timeout":"1s","updateMask":"timeout"}`)
	time.Sleep(1100 * time.Millisecond)
	gcRun(t, env, conn, []gcCase{
		{"create on expired challenge", "POST", "/api/v1/instance", `{"challengeId":"e1","sourceId":"s2"}`,
			gcInstance + "CreateInstance", &api.CreateInstanceRequest{ChallengeID: "e1", SourceID: "s2"}, 400, ctChallengeExpired("e1")},
		{"renew after challenge until", "PATCH", "/api/v1/instance/e1/s1", `{}`,
			gcInstance + "RenewInstance", &api.RenewInstanceRequest{ChallengeID: "e1", SourceID: "s1"}, 400, ctInstanceExpired("e1", "s1")},
		{"renew expired instance", "PATCH", "/api/v1/instance/e2/s1", `{}`,
			gcInstance + "RenewInstance", &api.RenewInstanceRequest{ChallengeID: "e2", SourceID: "s1"}, 400, ctInstanceExpired("e2", "s1")},
	})

	// What any gRPC server answers: an unknown method, an unparsable message.
	_, err = gcCall[api.Empty](conn, gcChallenge+"PurgeChallenge", &api.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unknown method: %v", err)
	}
	var garbage rawMessage = []byte{0x0a, 0xff} // field 1, length 255, truncated
	_, err = gcCall[api.Empty](conn, gcChallenge+"RetrieveChallenge", garbage, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "unmarshal") {
		t.Errorf("unparsable request: %v", err)
	}

	for _, id := range []string{"e1", "e2", "hostile"} {
		if _, err := gcCall[api.Empty](conn, gcChallenge+"DeleteChallenge", &api.DeleteChallengeRequest{ID: id}); err != nil {
			t.Errorf("delete %s: %v", id, err)
		}
	}
	env.Broker.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}

// gcStack is the identity of a stack named in an engine message.
var gcStack = regexp.MustCompile(`/[0-9a-f]{16}:`)

// gcDetailDesc reads details[i].description.
func gcDetailDesc(i int) func([]any) string {
	return func(ds []any) string {
		if len(ds) <= i {
			return ""
		}
		s, _ := ds[i].(map[string]any)["description"].(string)
		return s
	}
}

// gcViolationDesc reads details[i].fieldViolations[0].description.
func gcViolationDesc(i int) func([]any) string {
	return func(ds []any) string {
		if len(ds) <= i {
			return ""
		}
		fv, _ := ds[i].(map[string]any)["fieldViolations"].([]any)
		if len(fv) != 1 {
			return ""
		}
		s, _ := fv[0].(map[string]any)["description"].(string)
		return s
	}
}

// rawMessage and rawCodec send bytes as they are (an unparsable request).
type rawMessage []byte

type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(rawMessage); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(b []byte, v any) error { return api.Codec{}.Unmarshal(b, v) }

// The same requests over REST and gRPC give the same records: every answer
// of a life (create, retrieve, query, renew, update, delete) compared field
// by field between the two transports, and between gRPC and the store.
func TestGRPCMatchesREST(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	conn := gcDial(t, env)
	ref := env.Scenario(t, "additional")
	u := env.URL

	same := func(what string, grpcMsg api.Message, rest ctResp) {
		t.Helper()
		if rest.Status != 200 {
			t.Fatalf("%s (REST): %d %s", what, rest.Status, rest.Body)
		}
		ctSame(t, what, gcJSON(t, grpcMsg), string(rest.Body))
	}

	// Created over gRPC, read over both.
	c, err := gcCall[api.Challenge](conn, gcChallenge+"CreateChallenge", &api.CreateChallengeRequest{
		ID: "m1", Scenario: ref, Timeout: ctPtr(10 * time.Minute), Additional: map[string]string{"k": "v"}, Max: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctSame(t, "create answer", gcJSON(t, c), `{"id":"m1","scenario":"`+ref+`","timeout":"600s","until":null,"instances":[],"additional":{"k":"v"},"min":"0","max":"3"}`)
	in, err := gcCall[api.Instance](conn, gcInstance+"CreateInstance", &api.CreateInstanceRequest{ChallengeID: "m1", SourceID: "a", Additional: map[string]string{"p": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(in.ConnectionInfo, "?k=v&p=1") || in.Until == nil {
		t.Fatalf("created instance: %+v", in)
	}
	same("retrieve instance", in, ctDo(t, u, "GET", "/api/v1/instance/m1/a", ""))
	got, err := gcCall[api.Instance](conn, gcInstance+"RetrieveInstance", &api.RetrieveInstanceRequest{ChallengeID: "m1", SourceID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	same("retrieve instance over both", got, ctDo(t, u, "GET", "/api/v1/instance/m1/a", ""))
	// Created over REST, read over gRPC.
	if r := ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"m1","sourceId":"b"}`); r.Status != 200 {
		t.Fatalf("REST create: %d %s", r.Status, r.Body)
	}
	gotB, err := gcCall[api.Instance](conn, gcInstance+"RetrieveInstance", &api.RetrieveInstanceRequest{ChallengeID: "m1", SourceID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	same("instance created over REST", gotB, ctDo(t, u, "GET", "/api/v1/instance/m1/b", ""))

	ch, err := gcCall[api.Challenge](conn, gcChallenge+"RetrieveChallenge", &api.RetrieveChallengeRequest{ID: "m1"})
	if err != nil {
		t.Fatal(err)
	}
	sortInstances(ch)
	rest := ctDo(t, u, "GET", "/api/v1/challenge/m1", "")
	same("retrieve challenge", ch, ctResp{rest.Status, rest.Header, sortedChallengeJSON(t, rest.Body)})

	// The streams carry the same items (order is not part of the contract).
	chs, err := gcStream[api.Challenge](conn, gcChallenge+"QueryChallenge", &api.Empty{})
	if err != nil || len(chs) != 1 {
		t.Fatalf("query challenges: %v %v", chs, err)
	}
	sortInstances(chs[0])
	lines := ctResults(t, ctDo(t, u, "GET", "/api/v1/challenge", "").Body)
	if len(lines) != 1 {
		t.Fatalf("REST query: %d lines", len(lines))
	}
	ctSame(t, "query challenges", gcJSON(t, chs[0]), string(sortedChallengeJSON(t, lines[0])))
	ins, err := gcStream[api.Instance](conn, gcInstance+"QueryInstance", &api.QueryInstanceRequest{SourceID: "a"})
	if err != nil || len(ins) != 1 {
		t.Fatalf("query instances: %v %v", ins, err)
	}
	lines = ctResults(t, ctDo(t, u, "GET", "/api/v1/instance?sourceId=a", "").Body)
	if len(lines) != 1 {
		t.Fatalf("REST query instances: %d lines", len(lines))
	}
	ctSame(t, "query instances", gcJSON(t, ins[0]), string(lines[0]))
	none, err := gcStream[api.Instance](conn, gcInstance+"QueryInstance", &api.QueryInstanceRequest{SourceID: "nobody"})
	if err != nil || len(none) != 0 {
		t.Fatalf("query of a source without instances: %v %v", none, err)
	}

	// Renew over gRPC: the answer is what REST reads next (additional {}).
	time.Sleep(10 * time.Millisecond)
	ren, err := gcCall[api.Instance](conn, gcInstance+"RenewInstance", &api.RenewInstanceRequest{ChallengeID: "m1", SourceID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if !ren.LastRenew.After(in.LastRenew) || len(ren.Additional) != 0 {
		t.Fatalf("renew answer: %+v (created %+v)", ren, in)
	}
	after := ctParseInstance(t, ctDo(t, u, "GET", "/api/v1/instance/m1/a", "").Body)
	if !after.LastRenew.Equal(ren.LastRenew) || !after.Until.Equal(*ren.Until) {
		t.Fatalf("renewal over gRPC not stored: %+v vs %+v", after, ren)
	}

	// A masked update over gRPC rolls out like the same PATCH over REST.
	up, err := gcCall[api.Challenge](conn, gcChallenge+"UpdateChallenge", &api.UpdateChallengeRequest{
		ID: "m1", Additional: map[string]string{"k": "w"}, UpdateMask: &api.FieldMask{Paths: []string{"additional"}}})
	if err != nil {
		t.Fatal(err)
	}
	sortInstances(up)
	for _, i := range up.Instances {
		if !strings.Contains(i.ConnectionInfo, "k=w") {
			t.Errorf("instance not updated: %+v", i)
		}
	}
	rest = ctDo(t, u, "GET", "/api/v1/challenge/m1", "")
	same("challenge after the update", up, ctResp{rest.Status, rest.Header, sortedChallengeJSON(t, rest.Body)})

	// Deleted over gRPC: both transports then answer the same 404.
	if _, err := gcCall[api.Empty](conn, gcInstance+"DeleteInstance", &api.DeleteInstanceRequest{ChallengeID: "m1", SourceID: "a"}); err != nil {
		t.Fatal(err)
	}
	_, err = gcCall[api.Instance](conn, gcInstance+"RetrieveInstance", &api.RetrieveInstanceRequest{ChallengeID: "m1", SourceID: "a"})
	r := ctDo(t, u, "GET", "/api/v1/instance/m1/a", "")
	ctExpect(t, "deleted instance (REST)", r, 404, ctInstanceNotFound("m1", "a"))
	ctSame(t, "deleted instance (gRPC)", gcStatusJSON(t, err), string(r.Body))

	// The janitor's exact call: QueryChallenge with a nil request.
	if _, err := gcStream[api.Challenge](conn, gcChallenge+"QueryChallenge", (*emptypb.Empty)(nil)); err != nil {
		t.Fatalf("QueryChallenge(nil): %v", err)
	}
	if _, err := gcCall[api.Empty](conn, gcChallenge+"DeleteChallenge", &api.DeleteChallengeRequest{ID: "m1"}); err != nil {
		t.Fatal(err)
	}
	env.Broker.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}

// sortInstances orders a challenge's instances by source (their order is
// random on both transports).
func sortInstances(c *api.Challenge) {
	for i := range c.Instances {
		for j := i + 1; j < len(c.Instances); j++ {
			if c.Instances[j].SourceID < c.Instances[i].SourceID {
				c.Instances[i], c.Instances[j] = c.Instances[j], c.Instances[i]
			}
		}
	}
}

// sortedChallengeJSON re-encodes a REST challenge with its instances sorted.
func sortedChallengeJSON(t testing.TB, b []byte) []byte {
	t.Helper()
	var c api.Challenge
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	sortInstances(&c)
	return bytes.TrimSpace(gcJSON(t, &c))
}

// With API_TOKENS set, gRPC calls need `authorization: Bearer <token>`
// metadata like REST calls need the header; the answer is the same 401
// body as a gRPC status (UNAUTHENTICATED), and health stays open.
func TestGRPCBearerTokens(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Events: testenv.Inline, Env: map[string]string{"API_TOKENS": "tok-a,tok-b"}})
	conn := gcDial(t, env)
	unauth := ctStatus(16, "Unauthenticated.", ctInfo("UNAUTHENTICATED", ctDomain, nil))
	bearer := func(tok string) grpc.CallOption {
		return grpc.PerRPCCredsCallOption{Creds: tokenCreds(tok)}
	}
	for _, c := range []struct {
		name string
		opts []grpc.CallOption
		ok   bool
	}{
		{"no token", nil, false},
		{"wrong token", []grpc.CallOption{bearer("tok-c")}, false},
		{"first token", []grpc.CallOption{bearer("tok-a")}, true},
		{"rotated token", []grpc.CallOption{bearer("tok-b")}, true},
	} {
		_, err := gcCall[api.Challenge](conn, gcChallenge+"RetrieveChallenge", &api.RetrieveChallengeRequest{ID: "x"}, c.opts...)
		_, serr := gcStream[api.Instance](conn, gcInstance+"QueryInstance", &api.QueryInstanceRequest{SourceID: "s"}, c.opts...)
		if c.ok {
			if status.Code(err) != codes.NotFound || serr != nil {
				t.Errorf("%s: unary %v, stream %v; want NotFound and nil", c.name, err, serr)
			}
			continue
		}
		ctSame(t, c.name+" (unary)", gcStatusJSON(t, err), unauth)
		ctSame(t, c.name+" (stream)", gcStatusJSON(t, serr), unauth)
	}
	// The same refusal over REST.
	ctExpect(t, "REST without token", ctDo(t, env.URL, "GET", "/api/v1/challenge/x", ""), 401, unauth)
	if r := ctDo(t, env.URL, "GET", "/healthcheck", ""); r.Status != 200 {
		t.Errorf("health with tokens: %d", r.Status)
	}
}

// tokenCreds sends a bearer token in the authorization metadata (over
// plaintext, as a test against loopback).
type tokenCreds string

func (c tokenCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(c)}, nil
}
func (tokenCreds) RequireTransportSecurity() bool { return false }

// A failure over gRPC says why exactly as over REST: one ERROR line with the
// cause and the trace id the status message names (the otelgrpc span's), and
// no second line from the gRPC layer.
func TestGRPCFailuresSayWhy(t *testing.T) {
	logs := &secBuffer{}
	env := testenv.Start(t, testenv.Options{Log: logs})
	conn := gcDial(t, env)
	lcCreateChallenge(t, env, `{"id":"logs","scenario":"`+env.Scenario(t, "additional")+`","timeout":"600s"}`)
	_, err := gcCall[api.Instance](conn, gcInstance+"CreateInstance", &api.CreateInstanceRequest{
		ChallengeID: "logs", SourceID: "s1", Additional: map[string]string{"fail": "on purpose"}})
	st := status.Convert(err)
	m := regexp.MustCompile(`See trace ([0-9a-f]{32})\.`).FindStringSubmatch(st.Message())
	if st.Code() != codes.Unknown || m == nil {
		t.Fatalf("failed create: %v %q", st.Code(), st.Message())
	}
	line := oneErrorLine(t, logs, "instance creation failed", "logs", m[1])
	if !strings.Contains(line["error"].(string), "failing on request: on purpose") {
		t.Errorf("line without the cause: %v", line)
	}
	if n := strings.Count(logs.String(), `"msg":"gRPC call failed"`); n != 0 {
		t.Errorf("%d extra lines from the gRPC layer for an explained failure:\n%s", n, logs)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Errorf("the failed create left stacks: %v", s)
	}
}
