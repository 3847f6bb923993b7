package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/challfn/challfn/shared/apierr"
)

// decoder is one Decode* function seen generically.
type decoder struct {
	md     protoreflect.MessageDescriptor
	decode func(io.Reader) (any, error)
}

var (
	decCreateChallenge = decoder{mdCreateChallengeRequest, func(r io.Reader) (any, error) { return DecodeCreateChallengeRequest(r) }}
	decUpdateChallenge = decoder{mdUpdateChallengeRequest, func(r io.Reader) (any, error) { return DecodeUpdateChallengeRequest(r) }}
	decCreateInstance  = decoder{mdCreateInstanceRequest, func(r io.Reader) (any, error) { return DecodeCreateInstanceRequest(r) }}
	decRenewInstance   = decoder{mdRenewInstanceRequest, func(r io.Reader) (any, error) { return DecodeRenewInstanceRequest(r) }}
)

// fromDynamic converts what the gateway decoded with the same conversion
// the Decode* functions use, so both sides can be compared as Go values.
func fromDynamic(md protoreflect.MessageDescriptor, m protoreflect.Message) any {
	switch md {
	case mdCreateChallengeRequest:
		r := &CreateChallengeRequest{}
		r.fromProto(m)
		return r
	case mdUpdateChallengeRequest:
		r := &UpdateChallengeRequest{}
		r.fromProto(m)
		return r
	case mdCreateInstanceRequest:
		r := &CreateInstanceRequest{}
		r.fromProto(m)
		return r
	case mdRenewInstanceRequest:
		r := &RenewInstanceRequest{}
		r.fromProto(m)
		return r
	}
	panic("unknown descriptor")
}

// checkAgainstGateway decodes body with ours and with grpc-gateway's decoder
// and fails unless both accept it with equal results, or both reject it with
// the same text as a 400 code 3 without details. It returns our result.
func checkAgainstGateway(t testing.TB, d decoder, body []byte) (any, error) {
	t.Helper()
	got, err := d.decode(bytes.NewReader(body))
	ref, refErr := gatewayDecode(body, d.md)
	if (err != nil) != (refErr != nil) {
		t.Fatalf("body %q: ours err=%v, gateway err=%v", body, err, refErr)
	}
	if err != nil {
		var e *apierr.Error
		if !errors.As(err, &e) {
			t.Fatalf("body %q: error %T is not an *apierr.Error", body, err)
		}
		if e.Message() != refErr.Error() || e.Code() != apierr.CodeInvalidArgument || e.HTTPStatus() != 400 || len(e.Details()) != 0 {
			t.Fatalf("body %q: ours %d/%d %q %d details, gateway %q", body, e.HTTPStatus(), e.Code(), e.Message(), len(e.Details()), refErr)
		}
		return nil, err
	}
	ourMsg, derr := decodeBody(bytes.NewReader(body), d.md)
	if derr != nil {
		t.Fatalf("decodeBody disagrees with Decode: %v", derr)
	}
	if !proto.Equal(ourMsg, ref) {
		t.Fatalf("body %q: messages differ\n ours: %v\n gateway: %v", body, ourMsg, ref)
	}
	if want := fromDynamic(d.md, ref); !reflect.DeepEqual(got, want) {
		t.Fatalf("body %q: Go values differ\n ours: %#v\n gateway: %#v", body, got, want)
	}
	return got, nil
}

func TestDecodeForms(t *testing.T) {
	until := time.Date(2024, 7, 10, 15, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		dec     decoder
		body    string
		want    any    // nil: only compared with the gateway
		wantErr string // substring of the 400 message
	}{
		// CTFd plugin bodies (docs/contract.md §1.9).
		{"ctfd create challenge", decCreateChallenge,
			`{"id":"12","scenario":"registry:5000/scn:latest","timeout":"600s","until":"2024-07-10T15:00:00Z","additional":{"k":"v"},"min":0,"max":2,"updateStrategy":"update_in_place"}`,
			&CreateChallengeRequest{ID: "12", Scenario: "registry:5000/scn:latest", Timeout: ptr(600 * time.Second), Until: ptr(until), Additional: map[string]string{"k": "v"}, Max: 2}, ""},
		{"ctfd create challenge with nulls", decCreateChallenge,
			`{"id":"12","scenario":"s","timeout":null,"until":null,"additional":{},"min":0,"max":0}`,
			&CreateChallengeRequest{ID: "12", Scenario: "s"}, ""},
		{"ctfd update with reset", decUpdateChallenge,
			`{"timeout":null,"until":"2024-07-10T15:00:00Z","additional":{"k":"v"},"min":1,"max":3,"scenario":"reg/x:v2","updateStrategy":"blue_green","updateMask":"timeout,until,additional,min,max,scenario"}`,
			&UpdateChallengeRequest{Scenario: ptr("reg/x:v2"), UpdateStrategy: ptr(BlueGreen), Until: ptr(until), Additional: map[string]string{"k": "v"}, Min: 1, Max: 3,
				UpdateMask: &FieldMask{Paths: []string{"timeout", "until", "additional", "min", "max", "scenario"}}}, ""},
		{"ctfd create instance", decCreateInstance, `{"challengeId":"1","sourceId":"0"}`, &CreateInstanceRequest{ChallengeID: "1", SourceID: "0"}, ""},
		{"ctfd renew", decRenewInstance, `{}`, &RenewInstanceRequest{}, ""},

		// Names.
		{"snake case names", decCreateInstance, `{"challenge_id":"1","source_id":"2","additional":{"a":"b"}}`,
			&CreateInstanceRequest{ChallengeID: "1", SourceID: "2", Additional: map[string]string{"a": "b"}}, ""},
		{"snake enum by number", decUpdateChallenge, `{"update_strategy":2}`, &UpdateChallengeRequest{UpdateStrategy: ptr(Recreate)}, ""},
		{"camel enum by name", decUpdateChallenge, `{"updateStrategy":"recreate"}`, &UpdateChallengeRequest{UpdateStrategy: ptr(Recreate)}, ""},
		{"enum number outside the enum", decUpdateChallenge, `{"updateStrategy":7}`, &UpdateChallengeRequest{UpdateStrategy: ptr(UpdateStrategy(7))}, ""},
		{"enum default value is present", decUpdateChallenge, `{"updateStrategy":"update_in_place"}`, &UpdateChallengeRequest{UpdateStrategy: ptr(UpdateInPlace)}, ""},
		// DiscardUnknown also drops unknown enum names: the field stays absent.
		{"enum unknown name is dropped", decUpdateChallenge, `{"updateStrategy":"rolling"}`, &UpdateChallengeRequest{}, ""},
		{"enum wrong type", decUpdateChallenge, `{"updateStrategy":true}`, nil, "invalid value for enum field updateStrategy: true"},
		{"same field twice by both names", decCreateInstance, `{"challengeId":"1","challenge_id":"2"}`, nil, "duplicate field"},
		{"unknown fields ignored", decCreateChallenge, `{"id":"1","foo":{"bar":[1,2,{"x":null}]},"hash":"h","instances":[]}`, &CreateChallengeRequest{ID: "1"}, ""},

		// int64.
		{"int64 number", decCreateChallenge, `{"min":3,"max":4}`, &CreateChallengeRequest{Min: 3, Max: 4}, ""},
		{"int64 string", decCreateChallenge, `{"min":"3","max":"-4"}`, &CreateChallengeRequest{Min: 3, Max: -4}, ""},
		{"int64 exponent", decCreateChallenge, `{"min":1e2}`, &CreateChallengeRequest{Min: 100}, ""},
		{"int64 fraction", decCreateChallenge, `{"min":1.5}`, nil, "invalid value for int64 field min"},
		{"int64 garbage", decCreateChallenge, `{"min":"abc"}`, nil, `invalid value for int64 field min: "abc"`},
		{"int64 null is zero", decCreateChallenge, `{"min":null}`, &CreateChallengeRequest{}, ""},

		// Duration.
		{"duration seconds", decCreateChallenge, `{"timeout":"600s"}`, &CreateChallengeRequest{Timeout: ptr(600 * time.Second)}, ""},
		{"duration millis", decCreateChallenge, `{"timeout":"90.500s"}`, &CreateChallengeRequest{Timeout: ptr(90500 * time.Millisecond)}, ""},
		{"duration nanos", decCreateChallenge, `{"timeout":"0.000000001s"}`, &CreateChallengeRequest{Timeout: ptr(time.Nanosecond)}, ""},
		{"duration negative", decCreateChallenge, `{"timeout":"-5s"}`, &CreateChallengeRequest{Timeout: ptr(-5 * time.Second)}, ""},
		{"duration zero is set", decCreateChallenge, `{"timeout":"0s"}`, &CreateChallengeRequest{Timeout: ptr(time.Duration(0))}, ""},
		{"duration Go form rejected", decCreateChallenge, `{"timeout":"10m"}`, nil, `invalid google.protobuf.Duration value "10m"`},
		{"duration without unit rejected", decCreateChallenge, `{"timeout":"600"}`, nil, `invalid google.protobuf.Duration value "600"`},
		{"duration number rejected", decCreateChallenge, `{"timeout":600}`, nil, "unexpected token 600"},
		{"duration beyond time.Duration saturates", decCreateChallenge, `{"timeout":"315576000000s"}`, &CreateChallengeRequest{Timeout: ptr(time.Duration(1<<63 - 1))}, ""},
		{"duration beyond proto range", decCreateChallenge, `{"timeout":"315576000001s"}`, nil, "google.protobuf.Duration value out of range"},

		// Timestamp.
		{"timestamp Z", decCreateChallenge, `{"until":"2024-07-10T15:00:00Z"}`, &CreateChallengeRequest{Until: ptr(until)}, ""},
		{"timestamp offset", decCreateChallenge, `{"until":"2024-07-10T17:00:00+02:00"}`, &CreateChallengeRequest{Until: ptr(until)}, ""},
		{"timestamp fraction", decCreateChallenge, `{"until":"2024-07-10T15:00:00.5Z"}`, &CreateChallengeRequest{Until: ptr(until.Add(500 * time.Millisecond))}, ""},
		{"timestamp date only", decCreateChallenge, `{"until":"2024-07-10"}`, nil, `invalid google.protobuf.Timestamp value "2024-07-10"`},
		{"timestamp lowercase", decCreateChallenge, `{"until":"2024-07-10t15:00:00z"}`, nil, "invalid google.protobuf.Timestamp value"},

		// Field mask.
		{"mask camel paths", decUpdateChallenge, `{"updateMask":"updateStrategy,timeout.seconds"}`,
			&UpdateChallengeRequest{UpdateMask: &FieldMask{Paths: []string{"update_strategy", "timeout.seconds"}}}, ""},
		{"mask empty string is an empty mask", decUpdateChallenge, `{"updateMask":""}`, &UpdateChallengeRequest{UpdateMask: &FieldMask{Paths: []string{}}}, ""},
		{"mask null is no mask", decUpdateChallenge, `{"updateMask":null}`, &UpdateChallengeRequest{}, ""},
		{"mask snake path rejected", decUpdateChallenge, `{"updateMask":"update_strategy"}`, nil, `google.protobuf.FieldMask.paths contains invalid path: "update_strategy"`},
		{"mask object form rejected", decUpdateChallenge, `{"updateMask":{"paths":["timeout"]}}`, nil, "unexpected token {"},
		{"mask empty element rejected", decUpdateChallenge, `{"updateMask":"timeout,,until"}`, nil, `contains invalid path: ""`},
		{"scenario empty but present", decUpdateChallenge, `{"scenario":""}`, &UpdateChallengeRequest{Scenario: ptr("")}, ""},

		// Nulls and maps.
		{"null message fields", decUpdateChallenge, `{"timeout":null,"until":null,"additional":null,"scenario":null,"updateStrategy":null}`, &UpdateChallengeRequest{}, ""},
		{"map value null rejected", decCreateInstance, `{"additional":{"a":null}}`, nil, "invalid value for string field value: null"},
		{"map value number rejected", decCreateInstance, `{"additional":{"a":1}}`, nil, "invalid value for string field value: 1"},

		// Body framing.
		{"empty body", decCreateChallenge, ``, &CreateChallengeRequest{}, ""},
		{"whitespace body", decCreateChallenge, " \n\t ", &CreateChallengeRequest{}, ""},
		{"trailing bytes ignored", decCreateInstance, `{"challengeId":"1"} garbage`, &CreateInstanceRequest{ChallengeID: "1"}, ""},
		{"second value ignored", decCreateInstance, `{"challengeId":"1"}{"challengeId":"2"}`, &CreateInstanceRequest{ChallengeID: "1"}, ""},
		{"truncated", decCreateChallenge, `{"id":`, nil, "unexpected EOF"},
		{"not JSON", decCreateChallenge, `id=1`, nil, "invalid character 'i' looking for beginning of value"},
		{"top-level null", decCreateChallenge, `null`, nil, "unexpected token null"},
		{"top-level array", decCreateChallenge, `[]`, nil, "unexpected token ["},
		{"wrong scalar type", decCreateChallenge, `{"id":1}`, nil, "invalid value for string field id: 1"},
		{"invalid UTF-8", decCreateChallenge, "{\"id\":\"\xff\"}", nil, "invalid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkAgainstGateway(t, tt.dec, []byte(tt.body))
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("accepted, want error %q", tt.wantErr)
				}
				if !strings.Contains(plain(err.(*apierr.Error).Message()), tt.wantErr) {
					t.Fatalf("error %q, want it to contain %q", plain(err.(*apierr.Error).Message()), tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if tt.want != nil && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %#v\nwant %#v", got, tt.want)
			}
		})
	}
}

func TestDecodeNilReader(t *testing.T) {
	r, err := DecodeCreateChallengeRequest(nil)
	if err != nil || !reflect.DeepEqual(r, &CreateChallengeRequest{}) {
		t.Fatalf("%#v %v", r, err)
	}
}

func TestUpdateRequestHelpers(t *testing.T) {
	r, err := DecodeUpdateChallengeRequest(strings.NewReader(`{"updateMask":"timeout,additional","min":3}`))
	if err != nil {
		t.Fatal(err)
	}
	if !r.Masks("timeout") || !r.Masks("additional") || r.Masks("min") || r.Masks("update_strategy") {
		t.Fatalf("Masks wrong for %v", r.MaskPaths())
	}
	if r.Timeout != nil || r.Additional != nil {
		t.Fatal("masked-but-absent fields must carry their zero value (reset)")
	}
	if r.Strategy() != UpdateInPlace {
		t.Fatal("default strategy")
	}
	none := &UpdateChallengeRequest{}
	if none.Masks("timeout") || none.MaskPaths() != nil {
		t.Fatal("no mask must mask nothing")
	}
}

// Round trip: what we write, we read back identically (clients and tests use
// MarshalJSON/UnmarshalJSON).
func TestRoundTrip(t *testing.T) {
	c := fullChallenge()
	c.Instances = append(c.Instances, &Instance{ChallengeID: "1", SourceID: "3", Since: t0, LastRenew: t0, Until: ptr(t0), Flags: []string{"a", "b"}, Additional: map[string]string{"x": "y"}})
	b, err := c.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Challenge
	if err := back.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, c) {
		t.Fatalf("round trip\n got %#v\nwant %#v", &back, c)
	}

	u := &UpdateChallengeRequest{ID: "1", Scenario: ptr("s"), UpdateStrategy: ptr(BlueGreen), Timeout: ptr(time.Second), Until: ptr(t0),
		UpdateMask: &FieldMask{Paths: []string{"scenario", "timeout"}}, Additional: map[string]string{"a": "b"}, Min: 1, Max: 2}
	b, err = u.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var ub UpdateChallengeRequest
	if err := ub.UnmarshalJSON(b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&ub, u) {
		t.Fatalf("update round trip\n got %#v\nwant %#v", &ub, u)
	}

	// Only the deprecated single flag: still one flag.
	var inst Instance
	if err := inst.UnmarshalJSON([]byte(`{"flag":"F","since":"2025-01-02T03:04:05.120Z"}`)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(inst.Flags, []string{"F"}) || !inst.Since.Equal(t0) {
		t.Fatalf("%#v", inst)
	}
}

func TestBodyCap(t *testing.T) {
	big := `{"id":"` + strings.Repeat("a", 2048) + `"}`
	tests := []struct {
		name       string
		body       string
		setLength  bool
		limit      int64
		wantStatus int
	}{
		{"under the cap", `{"id":"1"}`, true, 1024, 200},
		{"content-length over the cap", big, true, 1024, 400},
		{"chunked body over the cap", big, false, 1024, 400},
		{"default cap", big, false, 0, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := LimitBody(w, r, tt.limit); err != nil {
					apierr.Write(w, err)
					return
				}
				req, err := DecodeCreateChallengeRequest(r.Body)
				if err != nil {
					apierr.Write(w, err)
					return
				}
				WriteEmpty(w)
				_ = req
			})
			srv := httptest.NewServer(h)
			defer srv.Close()
			var body io.Reader = strings.NewReader(tt.body)
			if !tt.setLength {
				body = io.MultiReader(body) // hides the length: chunked upload
			}
			resp, err := http.Post(srv.URL, "application/json", body)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			got, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, body %s", resp.StatusCode, got)
			}
			if tt.wantStatus == 400 {
				limit := tt.limit
				assertJSON(t, got, `{"code":3,"message":"Invalid argument.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INVALID_ARGUMENT","domain":"github.com/ctfer-io/chall-manager","metadata":{"field":"body"}},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"body","description":"The request body exceeds the maximum size of `+strconv.FormatInt(limit, 10)+` bytes.","reason":"TOO_LARGE","localizedMessage":null}]}]}`)
			}
		})
	}
}
