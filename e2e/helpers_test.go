package e2e

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// The helpers every test file of the package shares: one way to send a
// request and read its answer, one way to wait for a condition, one way to
// summarise durations. A file family keeps its own helpers only for what is
// its own (the contract's expected bodies, the fault tests' processes).

// reply is one HTTP answer, or the transport error of a process that died.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
	Err    error
}

// httpClient never follows redirects (a redirect is an answer to check) and
// keeps enough idle connections for the concurrent tests.
var httpClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{MaxIdleConnsPerHost: 64},
}

// send sends one request to base+path; body "" sends none; headers are
// "Key: value" strings. It never fails the test: the fault tests judge the
// transport errors of the processes they kill.
func send(ctx context.Context, base, method, path, body string, hdr ...string) reply {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, r)
	if err != nil {
		return reply{Err: err}
	}
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return reply{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Header: resp.Header, Body: b, Err: err}
}

// do is send that fails the test on a transport error.
func do(t testing.TB, base, method, path, body string, hdr ...string) reply {
	t.Helper()
	r := send(context.Background(), base, method, path, body, hdr...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v", method, path, r.Err)
	}
	return r
}

// must is do that fails the test unless the status is want; it returns the body.
func must(t testing.TB, base, method, path, body string, want int) []byte {
	t.Helper()
	r := do(t, base, method, path, body)
	if r.Status != want {
		t.Fatalf("%s %s %s: %d %s (want %d)", method, path, body, r.Status, r.Body, want)
	}
	return r.Body
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// quantile is the q-quantile (0 ≤ q ≤ 1) of ds by the nearest-rank method
// (the smallest value with at least q of the values at or below it); 0 for
// no values.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// median is the middle value of ds (the upper one of an even count).
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// ms is d in milliseconds, for b.ReportMetric.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// eventually calls f until it returns nil, failing the test with f's last
// error after d.
func eventually(t testing.TB, what string, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
