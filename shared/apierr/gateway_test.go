package apierr_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/status"

	"github.com/challfn/challfn/shared/apierr"
)

// Every catalogue entry written by apierr.Write equals what grpc-gateway's
// default error handler writes for the same google.rpc.Status.
func TestWriteMatchesGateway(t *testing.T) {
	errs := []*apierr.Error{
		apierr.Internal(), apierr.Canceled(), apierr.Unknown("raw"), apierr.BadRequest("unexpected EOF"),
		apierr.ChallengeNotFound("1"), apierr.ChallengeAlreadyExists("1"), apierr.ChallengeExpired("1"), apierr.ChallengeNoRenewal("1"),
		apierr.PoolerOutOfBounds(map[string]string{"min": "-1"}, apierr.FieldViolation{Field: "min", Reason: "MUST_BE_POSITIVE", Description: "d"}),
		apierr.InvalidUpdateMask([]string{"foo"}), apierr.InstanceAlreadyExists("1", "2"), apierr.InstanceNotFound("1", "2"), apierr.InstanceExpired("1", "2"),
		apierr.OCIUnreachable("r"), apierr.OCIReferenceNotFound("r"), apierr.OCIUnauthorized("r"), apierr.OCIInteraction("r"),
		apierr.OCIReferenceMalformed("r", "bad"), apierr.ScenarioNonMatching("r", "v", true), apierr.ScenarioPreprocessing("d", "r", "x"),
		apierr.Unavailable("u"), apierr.DeadlineExceeded(), apierr.InvalidArgument("id", "EMPTY", "e"), apierr.BodyTooLarge(5),
	}
	mux := runtime.NewServeMux()
	gw := &runtime.JSONPb{}
	gw.EmitUnpopulated = true
	for _, e := range errs {
		t.Run(e.Error(), func(t *testing.T) {
			ours := httptest.NewRecorder()
			apierr.Write(ours, e)
			ref := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/api/v1/challenge/1", nil)
			runtime.DefaultHTTPErrorHandler(context.Background(), mux, gw, ref, req, status.ErrorProto(e.Proto()))
			if ours.Code != ref.Code {
				t.Fatalf("status ours %d, gateway %d", ours.Code, ref.Code)
			}
			if ours.Header().Get("Content-Type") != ref.Header().Get("Content-Type") {
				t.Fatalf("Content-Type ours %q, gateway %q", ours.Header().Get("Content-Type"), ref.Header().Get("Content-Type"))
			}
			assertJSON(t, ours.Body.Bytes(), ref.Body.String())
		})
	}
}

// The gateway's own routing answers: unknown path and wrong method.
func TestRoutingErrorsMatchGateway(t *testing.T) {
	mux := runtime.NewServeMux()
	if err := mux.HandlePath(http.MethodGet, "/api/v1/challenge/{id}", func(w http.ResponseWriter, r *http.Request, _ map[string]string) {}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		method string
		path   string
		err    *apierr.Error
	}{
		{"unknown route", http.MethodGet, "/api/v1/nope/a/b", apierr.RouteNotFound()},
		{"wrong method", http.MethodPut, "/api/v1/challenge/1", apierr.MethodNotAllowed()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ref := httptest.NewRecorder()
			mux.ServeHTTP(ref, httptest.NewRequest(tt.method, tt.path, nil))
			ours := httptest.NewRecorder()
			apierr.Write(ours, tt.err)
			if ours.Code != ref.Code {
				t.Fatalf("status ours %d, gateway %d", ours.Code, ref.Code)
			}
			assertJSON(t, ours.Body.Bytes(), ref.Body.String())
		})
	}
}
