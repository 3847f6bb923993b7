package api

import (
	"bytes"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// Seeds: the request bodies of docs/contract.md §1, those of the CTFd plugin (§1.9) included.
var bodySeeds = []string{
	``,
	`{}`,
	`{"id":"1","scenario":"reg/scn:v1","timeout":"600s","until":"2024-07-10T15:00:00Z","additional":{"k":"v"},"min":0,"max":2,"updateStrategy":"update_in_place"}`,
	`{"id":"12","scenario":"s","timeout":null,"until":null,"additional":{},"min":"1","max":"4"}`,
	`{"timeout":"90.500s","until":"2025-01-02T03:04:05.120+02:00","updateMask":"timeout,until,additional,min,max,scenario","updateStrategy":2}`,
	`{"update_strategy":"blue_green","update_mask":"updateStrategy","scenario":""}`,
	`{"updateMask":{"paths":["timeout"]}}`,
	`{"updateMask":"update_strategy"}`,
	`{"timeout":"10m"}`,
	`{"challengeId":"1","sourceId":"0","additional":{"a":"b"}}`,
	`{"challenge_id":"1","source_id":"2"}`,
	`{"id":`,
	`null`,
	`[1,2]`,
	`{"min":1e2,"max":"-3"}`,
}

func fuzzDecoder(f *testing.F, d decoder, roundTrip func(any) (Message, func([]byte) (any, error))) {
	for _, s := range bodySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, err := checkAgainstGateway(t, d, body)
		if err != nil {
			return
		}
		// What we decoded, we can write and read back unchanged.
		m, decode := roundTrip(got)
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("body %q decoded to %#v that does not encode: %v", body, got, err)
		}
		back, err := decode(b)
		if err != nil {
			t.Fatalf("re-decoding %s: %v", b, err)
		}
		if !reflect.DeepEqual(back, got) {
			t.Fatalf("round trip of %q\n got %#v\nwant %#v", body, back, got)
		}
	})
}

func FuzzDecodeCreateChallengeRequest(f *testing.F) {
	fuzzDecoder(f, decCreateChallenge, func(v any) (Message, func([]byte) (any, error)) {
		return v.(*CreateChallengeRequest), func(b []byte) (any, error) { return DecodeCreateChallengeRequest(bytes.NewReader(b)) }
	})
}

func FuzzDecodeUpdateChallengeRequest(f *testing.F) {
	fuzzDecoder(f, decUpdateChallenge, func(v any) (Message, func([]byte) (any, error)) {
		return v.(*UpdateChallengeRequest), func(b []byte) (any, error) { return DecodeUpdateChallengeRequest(bytes.NewReader(b)) }
	})
}

func FuzzDecodeCreateInstanceRequest(f *testing.F) {
	fuzzDecoder(f, decCreateInstance, func(v any) (Message, func([]byte) (any, error)) {
		return v.(*CreateInstanceRequest), func(b []byte) (any, error) { return DecodeCreateInstanceRequest(bytes.NewReader(b)) }
	})
}

func FuzzDecodeRenewInstanceRequest(f *testing.F) {
	fuzzDecoder(f, decRenewInstance, func(v any) (Message, func([]byte) (any, error)) {
		return v.(*RenewInstanceRequest), func(b []byte) (any, error) { return DecodeRenewInstanceRequest(bytes.NewReader(b)) }
	})
}

func FuzzParseQueryInstance(f *testing.F) {
	for _, s := range []string{"", "source_id=1", "sourceId=0", "source_id=a&source_id=b", "source_id[x]=y", "sourceId.x=1", "%zz", "a=1;b=2", "foo=bar&sourceId=%20"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := ParseQueryInstance(raw)
		// With several keys naming the field, the gateway's outcome depends
		// on map order: only compare when it cannot.
		if values, perr := url.ParseQuery(raw); perr == nil {
			n := 0
			for k := range values {
				if m := bracketKey.FindStringSubmatch(k); len(m) == 3 {
					k = m[1]
				}
				first, _, _ := strings.Cut(k, ".")
				if first == "source_id" || first == "sourceId" {
					n++
				}
			}
			if n > 1 {
				return
			}
		}
		ref, refErr := gatewayQuery(raw)
		if (err != nil) != (refErr != nil) {
			t.Fatalf("%q: ours %v, gateway %v", raw, err, refErr)
		}
		if err != nil {
			if msg := err.Error(); !strings.Contains(msg, refErr.Error()) {
				t.Fatalf("%q: ours %v, gateway %v", raw, err, refErr)
			}
			return
		}
		if got != ref {
			t.Fatalf("%q: ours %q, gateway %q", raw, got, ref)
		}
	})
}
