package bootstrap

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// Until the App can be built, a gRPC call gets REST's 503 as a gRPC status
// (UNAVAILABLE with the reason); once it can, the gRPC handler is built once
// and serves.
func TestLazyServeGRPC(t *testing.T) {
	fail := errors.New("etcd: context deadline exceeded")
	builds := 0
	l := &Lazy{
		New: func(context.Context) (*App, error) {
			if fail != nil {
				return nil, fail
			}
			return &App{}, nil
		},
		GRPC: func(context.Context, *App) (http.Handler, error) {
			builds++
			return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }), nil
		},
	}
	call := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		l.ServeGRPC(rec, httptest.NewRequest(http.MethodPost, "/api.v1.challenge.ChallengeStore/RetrieveChallenge", nil))
		return rec
	}
	rec := call()
	msg, _ := url.PathUnescape(rec.Header().Get("Grpc-Message"))
	if rec.Code != http.StatusOK || rec.Header().Get("Grpc-Status") != "14" || msg != "challfn is not ready: etcd: context deadline exceeded" ||
		rec.Header().Get("Content-Type") != "application/grpc" || rec.Header().Get("Grpc-Status-Details-Bin") == "" {
		t.Fatalf("unready: %d %v", rec.Code, rec.Header())
	}
	fail = nil
	for range 2 {
		if rec := call(); rec.Code != http.StatusTeapot {
			t.Fatalf("ready: %d %v", rec.Code, rec.Header())
		}
	}
	if builds != 1 {
		t.Fatalf("gRPC handler built %d times", builds)
	}
}
