package api

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/challfn/challfn/shared/apierr"
)

// maskPathValid is an independent reading of upstream's rule (docs/contract.md
// §3.5): each dot-separated segment names a field of the current message,
// and only message fields (not maps, not lists) can be walked into.
func maskPathValid(path string) bool {
	md := mdUpdateChallengeRequest
	segs := strings.Split(path, ".")
	for i, s := range segs {
		if md == nil {
			return false
		}
		fd := md.Fields().ByName(protoreflect.Name(s))
		if fd == nil {
			return false
		}
		md = nil
		if i < len(segs)-1 && fd.Kind() == protoreflect.MessageKind && !fd.IsMap() && !fd.IsList() {
			md = fd.Message()
		}
	}
	return true
}

func FuzzCheckUpdateMask(f *testing.F) {
	for _, s := range []string{
		"", "timeout", "until,additional,min,max,scenario", "timeout.seconds", "update_strategy",
		"updateStrategy", "additional.k", "min.x", "id", "update_mask", "update_mask.paths",
		"timeout..seconds", ",", "timeout,", "until.nanos,timeout.seconds", "\x00", "tImeout",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		paths := strings.Split(raw, ",")
		err := CheckUpdateMask(&FieldMask{Paths: paths})
		want := true
		for _, p := range paths {
			want = want && maskPathValid(p)
		}
		if (err == nil) != want {
			t.Fatalf("mask %q: err %v, want valid=%v", paths, err, want)
		}
		if err != nil {
			var e *apierr.Error
			if !errors.As(err, &e) || e.HTTPStatus() != 400 || !json.Valid(e.Body()) {
				t.Fatalf("mask %q: %v is not a 400 in the contract shape", paths, err)
			}
		}
	})
}

func FuzzValidateID(f *testing.F) {
	for _, s := range []string{
		"1", "ctfd-chall-12", "", ".", "..", "...", "a/b", "a\x00b", "a\nb", "\u0085", "\xff",
		"conf-\u0430", "a\u200bb", "\u202e", strings.Repeat("x", MaxIDBytes), strings.Repeat("é", 129),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := ValidateID("id", id)
		ok := id != "" && len(id) <= MaxIDBytes && utf8.ValidString(id) &&
			!strings.ContainsFunc(id, unicode.IsControl) && !strings.Contains(id, "/") && id != "." && id != ".."
		if (err == nil) != ok {
			t.Fatalf("%q: err %v, want valid=%v", id, err, ok)
		}
		if err != nil {
			// The answer echoes nothing of the ID but must always be writable.
			var e *apierr.Error
			if !errors.As(err, &e) || e.HTTPStatus() != 400 || !json.Valid(e.Body()) || !utf8.Valid(e.Body()) {
				t.Fatalf("%q: %v", id, err)
			}
			return
		}
		// An accepted ID is one etcd key segment: it never reaches a sibling
		// key or a parent through the path separator.
		if strings.Contains(id, "/") {
			t.Fatalf("%q accepted with a separator", id)
		}
	})
}

// FuzzDurationTimestamp aims the body decoders' oracle (the gateway's own
// protojson) at the two well-known-type fields: a duration in `timeout` and
// a timestamp in `until`, the string forms most likely to disagree.
func FuzzDurationTimestamp(f *testing.F) {
	for _, s := range []string{
		"600s", "90.500s", "-1s", "0s", "1.000000001s", "315576000000s", "315576000001s", "1e3s", "10m", "s", "",
		"2024-07-10T15:00:00Z", "2025-01-02T03:04:05.120+02:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999Z",
		"2024-02-30T00:00:00Z", "2024-07-10 15:00:00Z", "2024-07-10T15:00:00", "2024-07-10T15:00:00.1234567891Z",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := json.Marshal(s)
		if err != nil {
			return
		}
		for _, body := range []string{`{"timeout":` + string(q) + `}`, `{"until":` + string(q) + `}`} {
			checkAgainstGateway(t, decUpdateChallenge, []byte(body))
			checkAgainstGateway(t, decCreateChallenge, []byte(body))
		}
	})
}
