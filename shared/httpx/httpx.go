// Package httpx is the HTTP plumbing every challfn function shares: optional
// bearer-token access control and the health endpoint. Routing and decoding of
// the API stay in the function packages.
package httpx

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/challfn/challfn/shared/apierr"
)

// HealthPath is the health endpoint of every function (docs/contract.md §1.5).
const HealthPath = "/healthcheck"

// RequireToken protects next with bearer tokens when tokens is not empty
// (docs/design.md, decision 10: deployments are private by default through the
// platform; tokens are for setups that must expose a public URL). Several
// tokens may be valid at once so they can be rotated. The health endpoint
// stays open for probes. A missing or wrong token is a 401 in the contract's
// shape.
func RequireToken(tokens []string, next http.Handler) http.Handler {
	tk := NewTokens(tokens)
	if tk == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == HealthPath {
			next.ServeHTTP(w, r)
			return
		}
		if !tk.Valid(r.Header.Get("Authorization")) {
			apierr.Write(w, apierr.Unauthenticated())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Tokens is a set of valid bearer tokens, for the REST middleware above and
// the gRPC interceptors (where the same value travels in the `authorization`
// metadata).
type Tokens struct {
	sums [][32]byte
}

// NewTokens returns the set, or nil when tokens is empty (no access control).
func NewTokens(tokens []string) *Tokens {
	if len(tokens) == 0 {
		return nil
	}
	// Compare fixed-size digests so neither the length nor the content of a
	// valid token leaks through timing.
	t := &Tokens{sums: make([][32]byte, len(tokens))}
	for i, tok := range tokens {
		t.sums[i] = sha256.Sum256([]byte(tok))
	}
	return t
}

// Valid reports whether authorization ("Bearer <token>") names a valid token.
func (t *Tokens) Valid(authorization string) bool {
	got, ok := strings.CutPrefix(authorization, "Bearer ")
	if !ok {
		return false
	}
	sum := sha256.Sum256([]byte(got))
	match := 0
	for i := range t.sums {
		// No early exit: every candidate is compared.
		match |= subtle.ConstantTimeCompare(sum[:], t.sums[i][:])
	}
	return match == 1
}

// Check is one dependency probe of the health endpoint (etcd, ...).
type Check struct {
	Name    string
	Timeout time.Duration
	Probe   func(ctx context.Context) error
}

// Health answers the health endpoint in the shape of upstream's health-go
// body: 200 with status "OK" when every check passes, 503 with status
// "Unavailable" and a failures map otherwise.
func Health(component, version string, checks ...Check) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		failures := map[string]string{}
		for _, c := range checks {
			timeout := c.Timeout
			if timeout <= 0 {
				timeout = time.Second
			}
			ctx, cancel := context.WithTimeout(r.Context(), timeout)
			if err := c.Probe(ctx); err != nil {
				failures[c.Name] = err.Error()
			}
			cancel()
		}
		var mem runtime.MemStats
		runtime.ReadMemStats(&mem)
		body := map[string]any{
			"status":    "OK",
			"timestamp": time.Now().UTC().Format(time.RFC3339Nano),
			"system": map[string]any{
				"version":            runtime.Version(),
				"goroutines_count":   runtime.NumGoroutine(),
				"total_alloc_bytes":  mem.TotalAlloc,
				"heap_objects_count": mem.HeapObjects,
				"alloc_bytes":        mem.Alloc,
			},
			"component": map[string]string{"name": component, "version": version},
		}
		status := http.StatusOK
		if len(failures) > 0 {
			body["status"] = "Unavailable"
			body["failures"] = failures
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(body)
	})
}

// BearerTransport sends `Authorization: Bearer token` with every request
// through base (http.DefaultTransport when nil): for challfn's calls to its
// own token-protected routes (the all-in-one's broker and janitor). An empty
// token returns base unchanged.
func BearerTransport(token string, base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	if token == "" {
		return base
	}
	return bearer{token: token, base: base}
}

type bearer struct {
	token string
	base  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.base.RoundTrip(r)
}
