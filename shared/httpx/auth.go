package httpx

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

	"github.com/challfn/challfn/shared/apierr"
)

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
