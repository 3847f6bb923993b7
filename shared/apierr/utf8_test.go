package apierr

import (
	"encoding/json"
	"net/http/httptest"
	"testing"
	"unicode/utf8"
)

// IDs come from clients and may be invalid UTF-8; an answer echoing one must
// still be written (it used to panic while packing the details).
func TestInvalidUTF8InDetails(t *testing.T) {
	bad := "a\xff\xfeb"
	for _, e := range []*Error{
		ChallengeNotFound(bad),
		InstanceNotFound(bad, bad),
		OCIReferenceMalformed(bad, bad),
		InvalidArgument(bad, bad, bad),
		ScenarioNonMatching(bad, bad, true),
		Unknown(bad),
	} {
		rec := httptest.NewRecorder()
		Write(rec, e)
		b := rec.Body.Bytes()
		var body struct {
			Code    int               `json:"code"`
			Details []json.RawMessage `json:"details"`
		}
		if !utf8.Valid(b) || json.Unmarshal(b, &body) != nil || body.Code != int(e.Code()) || len(body.Details) != len(e.Details()) {
			t.Fatalf("%s: %d %s", e.Message(), rec.Code, b)
		}
	}
}
