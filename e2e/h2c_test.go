package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/challfn/challfn/internal/testenv"
)

// h2cClient speaks HTTP/2 cleartext with prior knowledge only, as Knative's
// queue-proxy and Cloud Run do to a container port named h2c.
var h2cClient = func() *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: &p}}
}()

func h2cDo(t testing.TB, env *testenv.Env, method, path, body string) ctResp {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, env.URL+path, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := h2cClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s over h2c: %v", method, path, err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("%s %s answered over HTTP/%d", method, path, resp.ProtoMajor)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return ctResp{resp.StatusCode, resp.Header, b}
}

// REST keeps working when the platform forwards it as HTTP/2 cleartext (the
// port is named h2c so that gRPC gets through): the same answers as over
// HTTP/1.1, NDJSON streams and error bodies included.
func TestRESTOverH2C(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")
	ctExpect(t, "create", h2cDo(t, env, "POST", "/api/v1/challenge", `{"id":"h","scenario":"`+ref+`"}`), 200,
		`{"id":"h","scenario":"`+ref+`","timeout":null,"until":null,"instances":[],"additional":{},"min":"0","max":"0"}`)
	if r := h2cDo(t, env, "POST", "/api/v1/instance", `{"challengeId":"h","sourceId":"s"}`); r.Status != 200 {
		t.Fatalf("create instance: %d %s", r.Status, r.Body)
	}
	for _, path := range []string{"/api/v1/instance/h/s", "/api/v1/challenge/h"} {
		h1 := ctDo(t, env.URL, "GET", path, "")
		ctExpect(t, path, h2cDo(t, env, "GET", path, ""), 200, string(h1.Body))
	}
	for _, path := range []string{"/api/v1/challenge", "/api/v1/instance?sourceId=s"} {
		h1, h2 := ctResults(t, ctDo(t, env.URL, "GET", path, "").Body), ctResults(t, h2cDo(t, env, "GET", path, "").Body)
		if len(h1) != 1 || len(h2) != 1 {
			t.Fatalf("%s: %d lines over HTTP/1.1, %d over h2c", path, len(h1), len(h2))
		}
		ctSame(t, path, h2[0], string(h1[0]))
	}
	ctExpect(t, "missing", h2cDo(t, env, "GET", "/api/v1/challenge/zz", ""), 404, ctChallengeNotFound("zz"))
	ctExpect(t, "unknown route", h2cDo(t, env, "GET", "/api/v1/nope", ""), 404, ctRouteNotFound)
	if r := h2cDo(t, env, "GET", "/healthcheck", ""); r.Status != 200 {
		t.Fatalf("health over h2c: %d %s", r.Status, r.Body)
	}
	ctExpect(t, "delete", h2cDo(t, env, "DELETE", "/api/v1/challenge/h", ""), 200, `{}`)
	env.Broker.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}
