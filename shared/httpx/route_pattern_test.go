package httpx

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// The telemetry middleware names spans after r.Pattern: the router must set
// it to the route, not the path with its ids.
func TestRouterRecordsPattern(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request, _ []string) {}
	h := Router(
		Route{Prefix: "/api/v1/instance", Methods: map[string]func(http.ResponseWriter, *http.Request, []string){"POST": ok}},
		Route{Prefix: "/api/v1/instance", Params: 2, Methods: map[string]func(http.ResponseWriter, *http.Request, []string){"GET": ok}},
	)
	tests := []struct{ method, path, want string }{
		{"POST", "/api/v1/instance", "/api/v1/instance"},
		{"GET", "/api/v1/instance/web-1/team-7", "/api/v1/instance/{}/{}"},
		{"GET", "/api/v1/nothing", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, tt.path, nil)
		h.ServeHTTP(httptest.NewRecorder(), r)
		if r.Pattern != tt.want {
			t.Errorf("%s %s: pattern %q, want %q", tt.method, tt.path, r.Pattern, tt.want)
		}
	}
}
