package api

import (
	"net/http/httptest"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 120_000_000, time.UTC)

func fullChallenge() *Challenge {
	return &Challenge{
		ID:       "1",
		Scenario: "s",
		Timeout:  ptr(90*time.Second + 500*time.Millisecond),
		Until:    ptr(t0),
		Instances: []*Instance{{
			ChallengeID: "1", SourceID: "2", Since: t0, LastRenew: t0,
			ConnectionInfo: "nc x 1", Flags: []string{"FLAG{x}"},
		}},
		Additional: map[string]string{"k": "v"},
		Min:        2,
		Max:        4,
	}
}

// The examples of docs/contract.md §1.3, the bytes upstream's marshaler produces.
func TestEncodeGolden(t *testing.T) {
	tests := []struct {
		name string
		msg  Message
		want string
	}{
		{"challenge with nothing optional", &Challenge{ID: "1", Scenario: "reg/scn:v1"},
			`{"id":"1","scenario":"reg/scn:v1","timeout":null,"until":null,"instances":[],"additional":{},"min":"0","max":"0"}`},
		{"challenge fully populated", fullChallenge(),
			`{"id":"1","scenario":"s","timeout":"90.500s","until":"2025-01-02T03:04:05.120Z","instances":[{"challengeId":"1","sourceId":"2","since":"2025-01-02T03:04:05.120Z","lastRenew":"2025-01-02T03:04:05.120Z","connectionInfo":"nc x 1","flag":"FLAG{x}","flags":["FLAG{x}"],"additional":{}}],"additional":{"k":"v"},"min":"2","max":"4"}`},
		{"instance without until nor flags", &Instance{ChallengeID: "1", SourceID: "2", Since: t0, LastRenew: t0},
			`{"challengeId":"1","sourceId":"2","since":"2025-01-02T03:04:05.120Z","lastRenew":"2025-01-02T03:04:05.120Z","connectionInfo":"","flags":[],"additional":{}}`},
		{"instance with two flags has no flag", &Instance{ChallengeID: "1", SourceID: "2", Since: t0, LastRenew: t0, Until: ptr(t0.Add(10 * time.Minute)), Flags: []string{"a", "b"}, Additional: map[string]string{"x": "y"}},
			`{"challengeId":"1","sourceId":"2","since":"2025-01-02T03:04:05.120Z","lastRenew":"2025-01-02T03:04:05.120Z","until":"2025-01-02T03:14:05.120Z","connectionInfo":"","flags":["a","b"],"additional":{"x":"y"}}`},
		{"instance with one empty flag keeps flag", &Instance{Since: t0, LastRenew: t0, Flags: []string{""}},
			`{"challengeId":"","sourceId":"","since":"2025-01-02T03:04:05.120Z","lastRenew":"2025-01-02T03:04:05.120Z","connectionInfo":"","flag":"","flags":[""],"additional":{}}`},
		{"instance with unset times", &Instance{ChallengeID: "1"},
			`{"challengeId":"1","sourceId":"","since":null,"lastRenew":null,"connectionInfo":"","flags":[],"additional":{}}`},
		{"timestamp decimals 0/3/6/9 and offsets to Z", &Challenge{Until: ptr(time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 3600)))},
			`{"id":"","scenario":"","timeout":null,"until":"2025-01-02T02:04:05Z","instances":[],"additional":{},"min":"0","max":"0"}`},
		{"micro and nano decimals", &Challenge{Timeout: ptr(600*time.Second + time.Microsecond), Until: ptr(time.Date(2025, 1, 2, 3, 4, 5, 1, time.UTC))},
			`{"id":"","scenario":"","timeout":"600.000001s","until":"2025-01-02T03:04:05.000000001Z","instances":[],"additional":{},"min":"0","max":"0"}`},
		{"negative duration and int64", &Challenge{Timeout: ptr(-1500 * time.Millisecond), Min: -1, Max: 1 << 62},
			`{"id":"","scenario":"","timeout":"-1.500s","until":null,"instances":[],"additional":{},"min":"-1","max":"4611686018427387904"}`},
		{"create challenge request", &CreateChallengeRequest{ID: "1", Scenario: "s", Timeout: ptr(600 * time.Second)},
			`{"id":"1","scenario":"s","timeout":"600s","until":null,"additional":{},"min":"0","max":"0"}`},
		{"update challenge request", &UpdateChallengeRequest{ID: "1", UpdateStrategy: ptr(Recreate), UpdateMask: &FieldMask{Paths: []string{"timeout", "until", "update_strategy"}}},
			`{"id":"1","updateStrategy":"recreate","timeout":null,"until":null,"updateMask":"timeout,until,updateStrategy","additional":{},"min":"0","max":"0"}`},
		{"update strategy out of enum", &UpdateChallengeRequest{Scenario: ptr(""), UpdateStrategy: ptr(UpdateStrategy(7))},
			`{"id":"","scenario":"","updateStrategy":7,"timeout":null,"until":null,"updateMask":null,"additional":{},"min":"0","max":"0"}`},
		{"create instance request", &CreateInstanceRequest{ChallengeID: "1", SourceID: "0"},
			`{"challengeId":"1","sourceId":"0","additional":{}}`},
		{"renew instance request", &RenewInstanceRequest{}, `{"challengeId":"","sourceId":""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Encode(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			assertJSON(t, got, tt.want)

			// Same bytes as the gateway's own marshaler, modulo whitespace.
			pm, err := protoOf(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			ref, err := gateway.Marshal(pm)
			if err != nil {
				t.Fatal(err)
			}
			assertJSON(t, got, string(ref))

			rec := httptest.NewRecorder()
			Write(rec, tt.msg)
			if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
				t.Fatalf("Write: %d %q", rec.Code, rec.Header().Get("Content-Type"))
			}
			assertJSON(t, rec.Body.Bytes(), tt.want)
		})
	}
}

func TestWriteEmpty(t *testing.T) {
	rec := httptest.NewRecorder()
	WriteEmpty(rec)
	if rec.Code != 200 || rec.Body.String() != "{}" || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("got %d %q %q", rec.Code, rec.Body, rec.Header())
	}
}

func TestWriteUnencodable(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, &Challenge{Until: ptr(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))})
	if rec.Code != 500 {
		t.Fatalf("status %d, body %s", rec.Code, rec.Body)
	}
	assertJSON(t, rec.Body.Bytes(), `{"code":13,"message":"An internal error occurred.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INTERNAL_ERROR","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}`)
}

func TestUpdateStrategyNames(t *testing.T) {
	for _, s := range []UpdateStrategy{UpdateInPlace, BlueGreen, Recreate} {
		got, ok := ParseUpdateStrategy(s.String())
		if !ok || got != s || !s.Valid() {
			t.Errorf("%v: %v %v", s, got, ok)
		}
		// The Go names must be the proto enum's.
		if name := edUpdateStrategy.Values().ByNumber(protoNumber(s)).Name(); string(name) != s.String() {
			t.Errorf("%v: proto name %s", s, name)
		}
	}
	if UpdateStrategy(3).Valid() || UpdateStrategy(-1).Valid() || UpdateStrategy(3).String() != "3" {
		t.Error("out-of-enum values")
	}
	if _, ok := ParseUpdateStrategy("nope"); ok {
		t.Error("parsed an unknown name")
	}
}
