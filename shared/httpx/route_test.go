package httpx

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRouter(t *testing.T) {
	var got string
	record := func(name string) func(http.ResponseWriter, *http.Request, []string) {
		return func(w http.ResponseWriter, r *http.Request, p []string) {
			got = name + ":" + strings.Join(p, "|")
		}
	}
	h := Router(
		Route{Prefix: "/api/v1/instance", Methods: map[string]func(http.ResponseWriter, *http.Request, []string){
			http.MethodPost: record("create"), http.MethodGet: record("query"),
		}},
		Route{Prefix: "/api/v1/instance", Params: 2, Methods: map[string]func(http.ResponseWriter, *http.Request, []string){
			http.MethodGet: record("retrieve"), http.MethodDelete: record("delete"),
		}},
	)
	for _, tc := range []struct {
		method, path string
		want         string
		status       int
	}{
		{"POST", "/api/v1/instance", "create:", 200},
		{"GET", "/api/v1/instance?sourceId=1", "query:", 200},
		{"GET", "/api/v1/instance/a/b", "retrieve:a|b", 200},
		{"GET", "/api/v1/instance/a%20b/c", "retrieve:a b|c", 200},
		{"DELETE", "/api/v1/instance/1/2", "delete:1|2", 200},
		{"PUT", "/api/v1/instance", "", 501},
		{"PATCH", "/api/v1/instance/a/b", "", 501},
		{"GET", "/api/v1/instance/a/b/", "", 404},
		{"GET", "/api/v1/instance/a", "", 404},
		{"GET", "/api/v1/instance/a%2Fb/c", "", 404},
		{"GET", "/api/v1/instance//c", "", 404},
		{"GET", "/api/v1/instances", "", 404},
		{"GET", "/api/v1/other", "", 404},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			got = ""
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tc.method, tc.path, nil))
			if rec.Code != tc.status || got != tc.want {
				t.Fatalf("status %d handler %q, want %d %q", rec.Code, got, tc.status, tc.want)
			}
			if tc.status != 200 {
				var body struct {
					Code    int    `json:"code"`
					Message string `json:"message"`
				}
				_ = json.Unmarshal(rec.Body.Bytes(), &body)
				wantMsg := map[int]string{404: "Not Found", 501: "Method Not Allowed"}[tc.status]
				if body.Message != wantMsg {
					t.Fatalf("body %s, want message %q", rec.Body, wantMsg)
				}
			}
		})
	}
}
