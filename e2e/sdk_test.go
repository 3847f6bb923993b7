package e2e

import (
	"regexp"
	"strings"
	"testing"

	"github.com/challfn/challfn/internal/testenv"
)

// sdkShape is one way a ChallMaker writes a scenario's outputs by default, with
// chall-manager's SDK v0.6.6 or plain pulumi.Run (scenarios/README.md, "What it must
// export"), and what chall-manager gives for it.
type sdkShape struct {
	scenario string
	// ci matches the connection info; its first group is the instance identity.
	ci *regexp.Regexp
	// flags: "=x" is exactly x, "~x" a variation of x (sdk.Variate keeps the length).
	flags []string
}

var sdkShapes = []sdkShape{
	// Only resp.ConnectionInfo: the SDK still exports an unset "flags".
	{"sdk-default", regexp.MustCompile(`^curl -v https://([0-9a-f]{16})\.sdk-default\.local$`), nil},
	{"sdk-flag", regexp.MustCompile(`^nc ([0-9a-f]{16})\.sdk-flag\.local 1337$`), []string{"~CTF{deprecated-flag}"}},
	{"sdk", regexp.MustCompile(`^curl http://([0-9a-f]{16})\.ctf\.example$`), []string{"~CTF{sdk-scenario}"}},
	{"sdk-both", regexp.MustCompile(`^nc ([0-9a-f]{16})\.sdk-both\.local 1337$`), []string{"=CTF{first}", "~CTF{both-flags}", "=CTF{both-flags}"}},
	{"plain", regexp.MustCompile(`^nc ([0-9a-f]{16})\.plain\.local 1337$`), nil},
}

// check returns the identity of the instance in body, failing the test when its
// connection info or flags are not the shape's.
func (s sdkShape) check(t testing.TB, what string, body []byte) string {
	t.Helper()
	in := ctParseInstance(t, body)
	m := s.ci.FindStringSubmatch(in.Conn)
	if m == nil {
		t.Fatalf("%s: connection info %q does not match %s", what, in.Conn, s.ci)
	}
	ok := len(in.Flags) == len(s.flags)
	for i := 0; ok && i < len(s.flags); i++ {
		want := s.flags[i][1:]
		if s.flags[i][0] == '=' {
			ok = in.Flags[i] == want
		} else {
			ok = len(in.Flags[i]) == len(want) && strings.HasSuffix(in.Flags[i], "}")
		}
	}
	if !ok {
		t.Fatalf("%s: flags %q, want %q", what, in.Flags, s.flags)
	}
	return m[1]
}

// TestSDKScenarios: every scenario shape a ChallMaker writes by default is registered,
// gets an instance (fresh and from the pool), is retrieved, updated with each strategy
// (blue-green gives a new identity, the others keep it) and deleted, over HTTP with the
// real engine; nothing is left behind.
func TestSDKScenarios(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	u := env.URL
	for _, s := range sdkShapes {
		t.Run(s.scenario, func(t *testing.T) {
			t.Parallel()
			ref := env.Scenario(t, s.scenario)
			cid := "shape-" + s.scenario
			r := ctDo(t, u, "POST", "/api/v1/challenge", `{"id":"`+cid+`","scenario":"`+ref+`","timeout":"600s","additional":{"host":"ctf.example"},"min":1,"max":3}`)
			if r.Status != 200 {
				t.Fatalf("register: %d %s", r.Status, r.Body)
			}
			r = ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"`+cid+`","sourceId":"fresh"}`)
			if r.Status != 200 {
				t.Fatalf("create: %d %s", r.Status, r.Body)
			}
			id := s.check(t, "create", r.Body)
			r = ctDo(t, u, "GET", "/api/v1/instance/"+cid+"/fresh", "")
			if r.Status != 200 || s.check(t, "retrieve", r.Body) != id {
				t.Fatalf("retrieve: %d %s", r.Status, r.Body)
			}
			for _, strategy := range []string{"update_in_place", "blue_green", "recreate"} {
				r = ctDo(t, u, "PATCH", "/api/v1/challenge/"+cid, `{"additional":{"host":"ctf.example","round":"`+strategy+`"},"updateMask":"additional","updateStrategy":"`+strategy+`"}`)
				if r.Status != 200 {
					t.Fatalf("%s: %d %s", strategy, r.Status, r.Body)
				}
				r = ctDo(t, u, "GET", "/api/v1/instance/"+cid+"/fresh", "")
				if r.Status != 200 {
					t.Fatalf("retrieve after %s: %d %s", strategy, r.Status, r.Body)
				}
				newID := s.check(t, strategy, r.Body)
				if (newID != id) != (strategy == "blue_green") {
					t.Fatalf("%s: identity %s → %s", strategy, id, newID)
				}
				id = newID
			}
			// The pooled instance was updated too: a claim gets the shape's outputs.
			r = ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"`+cid+`","sourceId":"pooled"}`)
			if r.Status != 200 {
				t.Fatalf("claim: %d %s", r.Status, r.Body)
			}
			s.check(t, "claim", r.Body)
			for _, sid := range []string{"fresh", "pooled"} {
				if r = ctDo(t, u, "DELETE", "/api/v1/instance/"+cid+"/"+sid, ""); r.Status != 200 || string(r.Body) != "{}" {
					t.Fatalf("delete %s: %d %s", sid, r.Status, r.Body)
				}
			}
			if r = ctDo(t, u, "DELETE", "/api/v1/challenge/"+cid, ""); r.Status != 200 {
				t.Fatalf("delete challenge: %d %s", r.Status, r.Body)
			}
		})
	}
	t.Cleanup(func() {
		// After the parallel subtests: nothing left anywhere.
		env.Wait()
		if st := env.Stacks(t); len(st) != 0 {
			t.Errorf("stacks left: %v", st)
		}
		if k := env.Keys(t); len(k) != 0 {
			t.Errorf("records left: %v", k)
		}
	})
}
