package apierr_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/challfn/challfn/shared/apierr"
)

// assertJSON checks got against want both as parsed JSON and token by token
// (canonical), so the key order of every object is checked too while the
// random whitespace of protojson and encoding/json's HTML escaping are not.
func assertJSON(t *testing.T, got []byte, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("golden is not JSON: %v\n%s", err, want)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs\n got: %s\nwant: %s", got, want)
	}
	if gc, wc := canon(t, got), canon(t, []byte(want)); gc != wc {
		t.Fatalf("key order differs\n got: %s\nwant: %s", gc, wc)
	}
}

// canon re-emits the JSON token stream with one fixed spelling per token.
func canon(t *testing.T, b []byte) string {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var sb strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			sb.WriteString(v.String())
		case string:
			q, _ := json.Marshal(v)
			sb.Write(q)
		default:
			fmt.Fprint(&sb, v)
		}
		sb.WriteByte(' ')
	}
	return sb.String()
}

const (
	errInfo  = `"@type":"type.googleapis.com/google.rpc.ErrorInfo"`
	resInfo  = `"@type":"type.googleapis.com/google.rpc.ResourceInfo"`
	badReq   = `"@type":"type.googleapis.com/google.rpc.BadRequest"`
	precond  = `"@type":"type.googleapis.com/google.rpc.PreconditionFailure"`
	helpType = `"@type":"type.googleapis.com/google.rpc.Help"`
)

func TestCatalogueGolden(t *testing.T) {
	tests := []struct {
		name   string
		err    *apierr.Error
		status int
		reason string
		body   string
	}{
		{"internal", apierr.Internal(), 500, "INTERNAL_ERROR",
			`{"code":13,"message":"An internal error occurred.","details":[{` + errInfo + `,"reason":"INTERNAL_ERROR","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}`},
		{"canceled", apierr.Canceled(), 499, "", `{"code":1,"message":"","details":[]}`},
		{"unknown", apierr.Unknown("pulumi: up failed: boom"), 500, "", `{"code":2,"message":"pulumi: up failed: boom","details":[]}`},
		{"challenge not found", apierr.ChallengeNotFound("1"), 404, "CHALLENGE_NOT_FOUND",
			`{"code":5,"message":"Challenge not found.","details":[{` + errInfo + `,"reason":"CHALLENGE_NOT_FOUND","domain":"github.com/ctfer-io/chall-manager","metadata":{"id":"1"}},{` + resInfo + `,"resourceType":"Challenge","resourceName":"1","owner":"","description":"No challenge with this ID was found."}]}`},
		{"challenge already exists", apierr.ChallengeAlreadyExists("7"), 409, "CHALLENGE_ALREADY_EXISTS",
			`{"code":6,"message":"Challenge already exists.","details":[{` + errInfo + `,"reason":"CHALLENGE_ALREADY_EXISTS","domain":"github.com/ctfer-io/chall-manager","metadata":{"id":"7"}},{` + resInfo + `,"resourceType":"Challenge","resourceName":"7","owner":"","description":"A challenge with this ID already exists."}]}`},
		{"challenge expired", apierr.ChallengeExpired("1"), 400, "CHALLENGE_EXPIRED",
			`{"code":9,"message":"Challenge has expired.","details":[{` + errInfo + `,"reason":"CHALLENGE_EXPIRED","domain":"github.com/ctfer-io/chall-manager","metadata":{"id":"1"}},{` + precond + `,"violations":[{"type":"EXPIRATION","subject":"github.com/ctfer-io/chall-manager/Challenge","description":"Challenge has expired so can no longer process instance requests."}]}]}`},
		{"challenge no renewal", apierr.ChallengeNoRenewal("1"), 400, "CHALLENGE_NO_RENEWAL",
			`{"code":9,"message":"Challenge does not accept renewal.","details":[{` + errInfo + `,"reason":"CHALLENGE_NO_RENEWAL","domain":"github.com/ctfer-io/chall-manager","metadata":{"id":"1"}},{` + precond + `,"violations":[{"type":"RENEWAL","subject":"github.com/ctfer-io/chall-manager/Challenge","description":"Challenge has no timeout thus cannot be renewed."}]}]}`},
		{"pooler out of bounds", apierr.PoolerOutOfBounds(map[string]string{"min": "-1", "max": "2"},
			apierr.FieldViolation{Field: "min", Reason: "MUST_BE_POSITIVE", Description: "Minimum boundary must be a positive integer."}), 400, "CHALLENGE_POOLER_OUT_OF_BOUNDS",
			`{"code":3,"message":"Pooler configuration out of bounds.","details":[{` + errInfo + `,"reason":"CHALLENGE_POOLER_OUT_OF_BOUNDS","domain":"github.com/ctfer-io/chall-manager","metadata":{"max":"2","min":"-1"}},{` + badReq + `,"fieldViolations":[{"field":"min","description":"Minimum boundary must be a positive integer.","reason":"MUST_BE_POSITIVE","localizedMessage":null}]}]}`},
		{"invalid update mask", apierr.InvalidUpdateMask([]string{"foo"}), 400, "CHALLENGE_INVALID_UPDATE_MASK",
			`{"code":3,"message":"Invalid update mask.","details":[{` + errInfo + `,"reason":"CHALLENGE_INVALID_UPDATE_MASK","domain":"github.com/ctfer-io/chall-manager","metadata":{"update-mask":"paths:\"foo\""}},{` + badReq + `,"fieldViolations":[{"field":"update-mask","description":"The update mask is malformed.","reason":"INVALID_UPDATE_MASK","localizedMessage":null}]},{` + helpType + `,"links":[{"description":"Protocol Buffers > Well-Known Types > Field mask","url":"https://protobuf.dev/reference/protobuf/google.protobuf/#field-mask"},{"description":"AIP-161 Field masks","url":"https://google.aip.dev/161"}]}]}`},
		{"instance already exists", apierr.InstanceAlreadyExists("1", "1"), 409, "INSTANCE_ALREADY_EXISTS",
			`{"code":6,"message":"Instance already exists.","details":[{` + errInfo + `,"reason":"INSTANCE_ALREADY_EXISTS","domain":"github.com/ctfer-io/chall-manager","metadata":{"challenge_id":"1","source_id":"1"}},{` + resInfo + `,"resourceType":"Instance","resourceName":"1/1","owner":"","description":"An instance with this ID already exists."}]}`},
		{"instance not found", apierr.InstanceNotFound("1", "2"), 404, "INSTANCE_NOT_FOUND",
			`{"code":5,"message":"Instance not found.","details":[{` + errInfo + `,"reason":"INSTANCE_NOT_FOUND","domain":"github.com/ctfer-io/chall-manager","metadata":{"challenge_id":"1","source_id":"2"}},{` + resInfo + `,"resourceType":"Instance","resourceName":"1/2","owner":"","description":"No instance with this ID was found."}]}`},
		{"instance expired", apierr.InstanceExpired("1", "1"), 400, "INSTANCE_EXPIRED",
			`{"code":9,"message":"Instance can't be renewed as it expired.","details":[{` + errInfo + `,"reason":"INSTANCE_EXPIRED","domain":"github.com/ctfer-io/chall-manager","metadata":{"challenge_id":"1","source_id":"1"}},{` + precond + `,"violations":[{"type":"EXPIRATION","subject":"github.com/ctfer-io/chall-manager/Instance","description":"Instance has expired so can no longer process renewal request."}]}]}`},
		{"oci unreachable", apierr.OCIUnreachable("reg:5000/scn:v1"), 400, "OCI_INTERACTION",
			`{"code":9,"message":"Registry is not available. You might want to try again later.","details":[{` + errInfo + `,"reason":"OCI_INTERACTION","domain":"github.com/ctfer-io/chall-manager/OCI","metadata":{"reference":"reg:5000/scn:v1"}},{` + badReq + `,"fieldViolations":[{"field":"scenario","description":"Registry is unreachable.","reason":"OCI_INTERACTION","localizedMessage":null}]}]}`},
		{"oci reference not found", apierr.OCIReferenceNotFound("reg/scn:v1"), 400, "OCI_REFERENCE_NOT_FOUND",
			`{"code":3,"message":"Registry does not contain reference.","details":[{` + errInfo + `,"reason":"OCI_REFERENCE_NOT_FOUND","domain":"github.com/ctfer-io/chall-manager/OCI","metadata":{"reference":"reg/scn:v1"}},{` + badReq + `,"fieldViolations":[{"field":"scenario","description":"Reference not found.","reason":"OCI_REFERENCE_NOT_FOUND","localizedMessage":null}]}]}`},
		{"oci unauthorized", apierr.OCIUnauthorized("reg/scn:v1"), 400, "OCI_INTERACTION",
			`{"code":9,"message":"Registry requires authentication. You may not be authorized to use it.","details":[{` + errInfo + `,"reason":"OCI_INTERACTION","domain":"github.com/ctfer-io/chall-manager/OCI","metadata":{"reference":"reg/scn:v1"}},{` + badReq + `,"fieldViolations":[{"field":"scenario","description":"The reference of provided scenario is hosted on a registry that requires authentication, for which credentials did not match.","reason":"OCI_INTERACTION","localizedMessage":null}]}]}`},
		{"oci interaction", apierr.OCIInteraction("reg/scn:v1"), 500, "OCI_INTERACTION",
			`{"code":13,"message":"OCI interaction failed.","details":[{` + errInfo + `,"reason":"OCI_INTERACTION","domain":"github.com/ctfer-io/chall-manager","metadata":{"reference":"reg/scn:v1"}}]}`},
		{"oci malformed", apierr.OCIReferenceMalformed("Bad Ref", "invalid reference format"), 400, "OCI_REFERENCE_MALFORMED",
			`{"code":3,"message":"OCI reference is malformed.","details":[{` + errInfo + `,"reason":"OCI_REFERENCE_MALFORMED","domain":"github.com/ctfer-io/chall-manager","metadata":{"reference":"Bad Ref"}},{` + resInfo + `,"resourceType":"Reference","resourceName":"Bad Ref","owner":"","description":"invalid reference format"},{` + helpType + `,"links":[{"description":"OCI Image Format specification GitHub repository.","url":"https://github.com/opencontainers/image-spec"}]}]}`},
		{"scenario non matching (validation)", apierr.ScenarioNonMatching("reg/scn:v1", "preview failed: no connection_info", true), 400, "SCENARIO_NON_MATCHING_SPECIFICATION",
			`{"code":3,"message":"Scenario does not match specification.","details":[{` + errInfo + `,"reason":"SCENARIO_NON_MATCHING_SPECIFICATION","domain":"github.com/ctfer-io/chall-manager","metadata":{"reference":"reg/scn:v1"}},{` + resInfo + `,"resourceType":"Scenario","resourceName":"reg/scn:v1","owner":"","description":"A Pulumi program acting as a challenge instance deployment scenario."},{` + helpType + `,"links":[{"description":"Definition of a Scenario.","url":"https://ctfer.io/docs/chall-manager/glossary/#scenario"},{"description":"Step-by-step guide to create a Scenario.","url":"https://ctfer.io/docs/chall-manager/challmaker-guides/create-scenario/"}]},{` + badReq + `,"fieldViolations":[{"field":"scenario","description":"preview failed: no connection_info","reason":"VALIDATION","localizedMessage":null}]}]}`},
		{"scenario non matching (instance path)", apierr.ScenarioNonMatching("reg/scn:v1", "ignored", false), 400, "SCENARIO_NON_MATCHING_SPECIFICATION",
			`{"code":3,"message":"Scenario does not match specification.","details":[{` + errInfo + `,"reason":"SCENARIO_NON_MATCHING_SPECIFICATION","domain":"github.com/ctfer-io/chall-manager","metadata":{"reference":"reg/scn:v1"}},{` + resInfo + `,"resourceType":"Scenario","resourceName":"reg/scn:v1","owner":"","description":"A Pulumi program acting as a challenge instance deployment scenario."},{` + helpType + `,"links":[{"description":"Definition of a Scenario.","url":"https://ctfer.io/docs/chall-manager/glossary/#scenario"},{"description":"Step-by-step guide to create a Scenario.","url":"https://ctfer.io/docs/chall-manager/challmaker-guides/create-scenario/"}]}]}`},
		{"scenario preprocessing", apierr.ScenarioPreprocessing("/cache/abc", "reg/scn:v1", "go build: exit status 1"), 500, "SCENARIO_PREPROCESSING",
			`{"code":13,"message":"Scenario pre-processing failed.","details":[{` + errInfo + `,"reason":"SCENARIO_PREPROCESSING","domain":"github.com/ctfer-io/chall-manager","metadata":{"directory":"/cache/abc"}},{` + resInfo + `,"resourceType":"Scenario","resourceName":"reg/scn:v1","owner":"","description":"go build: exit status 1"}]}`},
		{"gateway decode", apierr.BadRequest("unexpected EOF"), 400, "", `{"code":3,"message":"unexpected EOF","details":[]}`},
		{"unknown route", apierr.RouteNotFound(), 404, "", `{"code":5,"message":"Not Found","details":[]}`},
		{"wrong method", apierr.MethodNotAllowed(), 501, "", `{"code":12,"message":"Method Not Allowed","details":[]}`},
		{"unavailable", apierr.Unavailable("etcd is unreachable."), 503, "UNAVAILABLE",
			`{"code":14,"message":"etcd is unreachable.","details":[{` + errInfo + `,"reason":"UNAVAILABLE","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}`},
		{"unauthenticated", apierr.Unauthenticated(), 401, "UNAUTHENTICATED",
			`{"code":16,"message":"Unauthenticated.","details":[{` + errInfo + `,"reason":"UNAUTHENTICATED","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}`},
		{"deadline exceeded", apierr.DeadlineExceeded(), 504, "", `{"code":4,"message":"context deadline exceeded","details":[]}`},
		{"invalid argument", apierr.InvalidArgument("source_id", "CONTROL_CHARACTER", "must not contain control characters"), 400, "INVALID_ARGUMENT",
			`{"code":3,"message":"Invalid argument.","details":[{` + errInfo + `,"reason":"INVALID_ARGUMENT","domain":"github.com/ctfer-io/chall-manager","metadata":{"field":"source_id"}},{` + badReq + `,"fieldViolations":[{"field":"source_id","description":"must not contain control characters","reason":"CONTROL_CHARACTER","localizedMessage":null}]}]}`},
		{"body too large", apierr.BodyTooLarge(1024), 400, "INVALID_ARGUMENT",
			`{"code":3,"message":"Invalid argument.","details":[{` + errInfo + `,"reason":"INVALID_ARGUMENT","domain":"github.com/ctfer-io/chall-manager","metadata":{"field":"body"}},{` + badReq + `,"fieldViolations":[{"field":"body","description":"The request body exceeds the maximum size of 1024 bytes.","reason":"TOO_LARGE","localizedMessage":null}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.HTTPStatus(); got != tt.status {
				t.Errorf("HTTPStatus = %d, want %d", got, tt.status)
			}
			if got := tt.err.Reason(); got != tt.reason {
				t.Errorf("Reason = %q, want %q", got, tt.reason)
			}
			body, err := tt.err.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			assertJSON(t, body, tt.body)

			rec := httptest.NewRecorder()
			rec.Header().Set("Transfer-Encoding", "chunked")
			apierr.Write(rec, fmt.Errorf("handler: %w", tt.err))
			if rec.Code != tt.status {
				t.Errorf("Write status = %d, want %d", rec.Code, tt.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if te := rec.Header().Get("Transfer-Encoding"); te != "" {
				t.Errorf("Transfer-Encoding left as %q", te)
			}
			assertJSON(t, rec.Body.Bytes(), tt.body)

			line := apierr.StreamLine(tt.err)
			assertJSON(t, line, `{"error":`+tt.body+`}`)
		})
	}
}

func TestWriteMapsPlainErrors(t *testing.T) {
	internal := `{"code":13,"message":"An internal error occurred.","details":[{` + errInfo + `,"reason":"INTERNAL_ERROR","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}`
	tests := []struct {
		name   string
		err    error
		status int
		body   string
	}{
		{"canceled", fmt.Errorf("lock: %w", context.Canceled), 499, `{"code":1,"message":"","details":[]}`},
		{"deadline", fmt.Errorf("up: %w", context.DeadlineExceeded), 504, `{"code":4,"message":"context deadline exceeded","details":[]}`},
		{"raw error never leaks", errors.New("open /var/secret/path: permission denied"), 500, internal},
		{"nil becomes internal", nil, 500, internal},
		{"catalogue error wins over a wrapped cause", apierr.InstanceNotFound("a", "b").WithCause(context.Canceled), 404, ""},
		{"max bytes", fmt.Errorf("read: %w", &http.MaxBytesError{Limit: 10}), 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			apierr.Write(rec, tt.err)
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d (body %s)", rec.Code, tt.status, rec.Body)
			}
			if strings.Contains(rec.Body.String(), "secret") {
				t.Fatalf("raw error text leaked: %s", rec.Body)
			}
			if tt.body != "" {
				assertJSON(t, rec.Body.Bytes(), tt.body)
			}
		})
	}
}

func TestUnauthenticatedHeader(t *testing.T) {
	rec := httptest.NewRecorder()
	apierr.Write(rec, apierr.Unauthenticated())
	if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
		t.Fatalf("WWW-Authenticate = %q", got)
	}
}

func TestCauseIsKept(t *testing.T) {
	cause := errors.New("etcd: context deadline")
	err := fmt.Errorf("store: %w", apierr.Internal().WithCause(cause))
	if !errors.Is(err, cause) {
		t.Fatal("cause lost")
	}
	if !apierr.HasReason(err, apierr.ReasonInternal) {
		t.Fatal("HasReason false")
	}
	if apierr.HasReason(err, apierr.ReasonChallengeNotFound) {
		t.Fatal("HasReason true for another reason")
	}
	if !strings.Contains(err.Error(), "etcd: context deadline") {
		t.Fatalf("Error() hides the cause: %s", err)
	}
	if b := apierr.Internal().WithCause(cause).Body(); bytes.Contains(b, []byte("etcd")) {
		t.Fatalf("cause on the wire: %s", b)
	}
	if apierr.CodeOf(err) != apierr.CodeInternal || apierr.CodeOf(nil) != apierr.CodeOK {
		t.Fatal("CodeOf")
	}
}

func TestHTTPStatusFromCode(t *testing.T) {
	want := map[apierr.Code]int{0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401, 99: 500}
	for c, s := range want {
		if got := apierr.HTTPStatusFromCode(c); got != s {
			t.Errorf("code %d: %d, want %d", c, got, s)
		}
	}
}

func TestMaskText(t *testing.T) {
	tests := map[string][]string{
		`paths:"foo"`:                     {"foo"},
		`paths:"a" paths:"b.c"`:           {"a", "b.c"},
		`paths:"q\"\\\n\x1"`:              {"q\"\\\n\x01"},
		`paths:"é"`:                       {"é"},
		``:                                nil,
		`paths:"timeout" paths:"seconds"`: {"timeout", "seconds"},
	}
	for want, paths := range tests {
		if got := apierr.MaskText(paths); got != want {
			t.Errorf("MaskText(%q) = %s, want %s", paths, got, want)
		}
	}
}

func TestCodeString(t *testing.T) {
	for c, want := range map[apierr.Code]string{0: "OK", 1: "Canceled", 9: "FailedPrecondition", 16: "Unauthenticated", 17: "Code(17)", -1: "Code(-1)"} {
		if got := c.String(); got != want {
			t.Errorf("%d: %q, want %q", int32(c), got, want)
		}
	}
	if got := apierr.ChallengeNotFound("1").Error(); got != "rpc error: code = NotFound desc = Challenge not found. (CHALLENGE_NOT_FOUND)" {
		t.Errorf("Error() = %q", got)
	}
}
