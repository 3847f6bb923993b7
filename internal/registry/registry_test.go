package registry_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/challfn/challfn/internal/registry"
)

func get(t *testing.T, url, user, pass string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestServe(t *testing.T) {
	tests := []struct {
		name       string
		opts       registry.Options
		user, pass string
		want       int
		challenge  string
	}{
		{name: "anonymous", want: http.StatusOK},
		{name: "auth without credentials", opts: registry.Options{Username: "u", Password: "p"}, want: http.StatusUnauthorized, challenge: `Basic realm="challfn"`},
		{name: "auth with wrong password", opts: registry.Options{Username: "u", Password: "p"}, user: "u", pass: "x", want: http.StatusUnauthorized, challenge: `Basic realm="challfn"`},
		{name: "auth with credentials", opts: registry.Options{Username: "u", Password: "p"}, user: "u", pass: "p", want: http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var seen atomic.Int64
			tt.opts.Middleware = func(h http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					seen.Add(1)
					h.ServeHTTP(w, r)
				})
			}
			s, err := registry.Start(t.Context(), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			req, _ := http.NewRequest(http.MethodGet, "http://"+s.Host()+"/v2/", nil)
			if tt.user != "" {
				req.SetBasicAuth(tt.user, tt.pass)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("status = %d, want %d", resp.StatusCode, tt.want)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tt.challenge {
				t.Fatalf("challenge = %q, want %q", got, tt.challenge)
			}
			// The middleware sits behind authentication: refused requests never reach it.
			if wantSeen := int64(map[bool]int{true: 1, false: 0}[tt.want == http.StatusOK]); seen.Load() != wantSeen {
				t.Fatalf("middleware saw %d requests, want %d", seen.Load(), wantSeen)
			}
		})
	}
}

func TestCloseAndCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	s, err := registry.Start(ctx, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.Host() + "/v2/"
	if code := get(t, url, "", ""); code != http.StatusOK {
		t.Fatalf("status = %d", code)
	}
	cancel()
	if err := s.Close(); err != nil { // waits for the cancel-triggered close too
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("server still answers after Close")
	}
}
