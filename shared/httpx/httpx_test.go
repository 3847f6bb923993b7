package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestRequireToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	for _, tc := range []struct {
		name   string
		tokens []string
		path   string
		header string
		want   int
	}{
		{"no tokens configured", nil, "/api/v1/challenge", "", http.StatusTeapot},
		{"missing token", []string{"a"}, "/api/v1/challenge", "", http.StatusUnauthorized},
		{"wrong token", []string{"a"}, "/api/v1/challenge", "Bearer b", http.StatusUnauthorized},
		{"wrong scheme", []string{"a"}, "/api/v1/challenge", "Basic a", http.StatusUnauthorized},
		{"prefix of a token", []string{"abc"}, "/api/v1/challenge", "Bearer ab", http.StatusUnauthorized},
		{"right token", []string{"a"}, "/api/v1/challenge", "Bearer a", http.StatusTeapot},
		{"rotated token", []string{"old", "new"}, "/api/v1/instance", "Bearer old", http.StatusTeapot},
		{"health stays open", []string{"a"}, HealthPath, "", http.StatusTeapot},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			rec := httptest.NewRecorder()
			RequireToken(tc.tokens, ok).ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d", rec.Code, tc.want)
			}
			if rec.Code == http.StatusUnauthorized {
				var body struct {
					Code    int               `json:"code"`
					Message string            `json:"message"`
					Details []json.RawMessage `json:"details"`
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Code != 16 || body.Details == nil {
					t.Fatalf("401 body not in the contract shape: %s", rec.Body)
				}
			}
		})
	}
}

func TestHealth(t *testing.T) {
	var fail error
	h := Health("challfn-test", "v1", Check{Name: "etcd", Probe: func(context.Context) error { return fail }})
	get := func() (*httptest.ResponseRecorder, map[string]any) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, HealthPath, nil))
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		return rec, body
	}
	rec, body := get()
	if rec.Code != 200 || body["status"] != "OK" || body["failures"] != nil {
		t.Fatalf("healthy: %d %v", rec.Code, body)
	}
	fail = errors.New("etcd unreachable")
	rec, body = get()
	if rec.Code != 503 || body["status"] != "Unavailable" || body["failures"].(map[string]any)["etcd"] != "etcd unreachable" {
		t.Fatalf("unhealthy: %d %v", rec.Code, body)
	}
}
