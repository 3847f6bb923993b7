package api

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/challfn/challfn/shared/apierr"
)

func TestCheckUpdateMask(t *testing.T) {
	tests := []struct {
		paths []string
		nilM  bool
		valid bool
	}{
		{nilM: true, valid: true},
		{paths: []string{}, valid: true},
		{paths: []string{"timeout", "until", "additional", "min", "max", "scenario"}, valid: true},
		{paths: []string{"update_strategy", "update_mask", "id"}, valid: true},
		{paths: []string{"timeout.seconds", "until.nanos", "update_mask.paths"}, valid: true},
		{paths: []string{"foo"}},
		{paths: []string{"timeout", "foo"}},
		{paths: []string{"additional.key"}},
		{paths: []string{"min.value"}},
		{paths: []string{"scenario.x"}},
		{paths: []string{"timeout.foo"}},
		{paths: []string{"updateStrategy"}}, // the proto name is required here
		{paths: []string{""}},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.paths), func(t *testing.T) {
			var m *FieldMask
			if !tt.nilM {
				m = &FieldMask{Paths: tt.paths}
			}
			err := CheckUpdateMask(m)
			if tt.valid {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			if !apierr.HasReason(err, apierr.ReasonChallengeInvalidUM) {
				t.Fatalf("got %v", err)
			}
			body, _ := apierr.From(err).MarshalJSON()
			assertJSON(t, body, `{"code":3,"message":"Invalid update mask.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CHALLENGE_INVALID_UPDATE_MASK","domain":"github.com/ctfer-io/chall-manager","metadata":{"update-mask":`+jsonString(apierr.MaskText(tt.paths))+`}},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"update-mask","description":"The update mask is malformed.","reason":"INVALID_UPDATE_MASK","localizedMessage":null}]},{"@type":"type.googleapis.com/google.rpc.Help","links":[{"description":"Protocol Buffers > Well-Known Types > Field mask","url":"https://protobuf.dev/reference/protobuf/google.protobuf/#field-mask"},{"description":"AIP-161 Field masks","url":"https://google.aip.dev/161"}]}]}`)
		})
	}
}

// The mask of a decoded body goes through CheckUpdateMask with its metadata
// in the text format, as upstream (`paths:"foo"`).
func TestDecodedMaskCheck(t *testing.T) {
	r, err := DecodeUpdateChallengeRequest(strings.NewReader(`{"updateMask":"foo,timeout"}`))
	if err != nil {
		t.Fatal(err)
	}
	err = CheckUpdateMask(r.UpdateMask)
	e := apierr.From(err)
	if e == nil || e.HTTPStatus() != 400 {
		t.Fatalf("got %v", err)
	}
	body, _ := e.MarshalJSON()
	if !strings.Contains(string(body), `"update-mask":"paths:\"foo\" paths:\"timeout\""`) {
		t.Fatalf("metadata: %s", body)
	}
}

func jsonString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func TestCheckPooler(t *testing.T) {
	const (
		minPos  = `{"field":"min","description":"Minimum boundary must be a positive integer.","reason":"MUST_BE_POSITIVE","localizedMessage":null}`
		maxPos  = `{"field":"max","description":"Maximum boundary must be a positive integer.","reason":"MUST_BE_POSITIVE","localizedMessage":null}`
		inverse = `{"field":"min","description":"When an upper bound is defined, minimum cannot exceed maximum.","reason":"INVERTED_BOUNDARIES","localizedMessage":null}`
	)
	tests := []struct {
		name       string
		paths      []string
		min, max   int64
		metadata   string
		violations string // "" = no error
	}{
		{"create ok", CreatePoolerPaths, 2, 4, "", ""},
		{"create no max", CreatePoolerPaths, 5, 0, "", ""},
		{"create equal", CreatePoolerPaths, 4, 4, "", ""},
		{"create inverted", CreatePoolerPaths, 5, 4, `{"max":"4","min":"5"}`, inverse},
		{"create negative min", CreatePoolerPaths, -1, 4, `{"max":"4","min":"-1"}`, minPos},
		{"create negative max", CreatePoolerPaths, 1, -2, `{"max":"-2","min":"1"}`, maxPos},
		{"create both negative", CreatePoolerPaths, -3, -2, `{"max":"-2","min":"-3"}`, minPos + "," + maxPos},
		{"negative min above positive max", []string{"max", "min"}, 7, 3, `{"max":"3","min":"7"}`, inverse},
		{"negative min and inverted impossible", CreatePoolerPaths, -5, 3, `{"max":"3","min":"-5"}`, minPos},
		{"update only min: no inversion check", []string{"min"}, 9, 1, "", ""},
		{"update only min negative", []string{"min", "timeout"}, -1, -7, `{"min":"-1"}`, minPos},
		{"update only max negative", []string{"max"}, -9, -1, `{"max":"-1"}`, maxPos},
		{"not in mask", []string{"timeout"}, -1, -1, "", ""},
		{"no mask", nil, -1, -1, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPooler(tt.paths, tt.min, tt.max)
			if tt.violations == "" {
				if err != nil {
					t.Fatalf("unexpected %v", err)
				}
				return
			}
			e := apierr.From(err)
			if e == nil || e.HTTPStatus() != 400 {
				t.Fatalf("got %v", err)
			}
			body, _ := e.MarshalJSON()
			assertJSON(t, body, `{"code":3,"message":"Pooler configuration out of bounds.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"CHALLENGE_POOLER_OUT_OF_BOUNDS","domain":"github.com/ctfer-io/chall-manager","metadata":`+tt.metadata+`},{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[`+tt.violations+`]}]}`)
		})
	}
}

// gatewayQuery is what the generated QueryInstance handler does with the URL.
func gatewayQuery(raw string) (string, error) {
	values, err := url.ParseQuery(raw)
	if err != nil {
		return "", err
	}
	m := dynamicpb.NewMessage(mdQueryInstanceRequest)
	filter := &utilities.DoubleArray{Encoding: map[string]int{}}
	if err := runtime.PopulateQueryParameters(m, values, filter); err != nil {
		return "", err
	}
	return m.Get(mdQueryInstanceRequest.Fields().ByName("source_id")).String(), nil
}

func TestParseQueryInstance(t *testing.T) {
	tests := []struct {
		query   string
		want    string
		wantErr string
	}{
		{"source_id=42", "42", ""},
		{"sourceId=42", "42", ""},
		{"", "", ""},
		{"source_id=", "", ""},
		{"source_id", "", ""},
		{"foo=bar&source_id=a%20b", "a b", ""},
		{"unknown.path=1&sourceId=x", "x", ""},
		{"SourceId=1", "", ""},
		{"source_id=a&source_id=b", "", `too many values for field "source_id": a, b`},
		{"sourceId=a&sourceId=b", "", `too many values for field "source_id": a, b`},
		{"source_id[x]=y", "", `too many values for field "source_id": x, y`},
		{"source_id[]=y", "", `too many values for field "source_id": , y`},
		{"source_id.x=1", "", `invalid path: "source_id" is not a message`},
		{"sourceId.x=1", "", `invalid path: "sourceId" is not a message`},
		{"source_id=%zz", "", `invalid URL escape "%zz"`},
		{"a=1;source_id=2", "", "invalid semicolon separator in query"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			got, err := ParseQueryInstance(tt.query)
			ref, refErr := gatewayQuery(tt.query)
			if (err != nil) != (refErr != nil) {
				t.Fatalf("ours %v, gateway %v", err, refErr)
			}
			if tt.wantErr != "" {
				e := apierr.From(err)
				if err == nil || e.Message() != tt.wantErr || e.Message() != refErr.Error() || e.HTTPStatus() != 400 || e.Code() != apierr.CodeInvalidArgument {
					t.Fatalf("ours %v, gateway %v, want %q", err, refErr, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want || got != ref {
				t.Fatalf("ours %q %v, gateway %q, want %q", got, err, ref, tt.want)
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		id     string
		reason string // "" = valid
	}{
		{"1", ""},
		{"0", ""},
		{"chall-é_ü.x:1@2", ""},
		{"..a", ""},
		{strings.Repeat("a", MaxIDBytes), ""},
		{"", "EMPTY"},
		{strings.Repeat("a", MaxIDBytes+1), "TOO_LONG"},
		{strings.Repeat("é", MaxIDBytes/2+1), "TOO_LONG"},
		{"a\xffb", "INVALID_UTF8"},
		{"a\nb", "CONTROL_CHARACTER"},
		{"a\x00", "CONTROL_CHARACTER"},
		{"a\u0085", "CONTROL_CHARACTER"},
		{"a\x7f", "CONTROL_CHARACTER"},
		{"a/b", "SLASH"},
		{"/", "SLASH"},
		{".", "DOT_SEGMENT"},
		{"..", "DOT_SEGMENT"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.id), func(t *testing.T) {
			err := ValidateID("source_id", tt.id)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("rejected: %v", err)
				}
				return
			}
			var e *apierr.Error
			if !errors.As(err, &e) || e.HTTPStatus() != 400 || e.Code() != apierr.CodeInvalidArgument {
				t.Fatalf("got %v", err)
			}
			body, _ := e.MarshalJSON()
			for _, want := range []string{`"field":"source_id"`, `"reason":"` + tt.reason + `"`, `"reason":"INVALID_ARGUMENT"`} {
				if !strings.Contains(string(body), want) {
					t.Fatalf("body %s lacks %s", body, want)
				}
			}
		})
	}
}
