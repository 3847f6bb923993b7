package e2e

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
)

// The tests of this file drive challfn's local run with chall-manager
// v0.6.6's own gRPC clients, built from the Go module proxy: the CLI
// ChallMakers use and the janitor deployments run (docs/contract.md §5). Helpers
// start with "up".

// upRun runs an upstream binary and returns its output. The CLI reports
// failures on stdout and exits 0 (it prints and returns nil), so callers
// check the lines they expect.
func upRun(t testing.TB, env []string, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), gcTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", bin, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// upWant fails unless out has a line equal to want.
func upWant(t testing.TB, what, out string, want ...string) {
	t.Helper()
	lines := strings.Split(out, "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			found = found || l == w
		}
		if !found {
			t.Fatalf("%s: no line %q in\n%s", what, w, out)
		}
	}
}

// upChallenge reads a challenge over REST.
func upChallenge(t testing.TB, env *testenv.Env, id string) map[string]any {
	t.Helper()
	r := ctDo(t, env.URL, "GET", "/api/v1/challenge/"+id, "")
	if r.Status != 200 {
		t.Fatalf("challenge %s: %d %s", id, r.Status, r.Body)
	}
	return ctObj(t, r.Body)
}

// upInstance reads an instance over REST.
func upInstance(t testing.TB, env *testenv.Env, cid, sid string) ctInstance {
	t.Helper()
	r := ctDo(t, env.URL, "GET", "/api/v1/instance/"+cid+"/"+sid, "")
	if r.Status != 200 {
		t.Fatalf("instance %s/%s: %d %s", cid, sid, r.Status, r.Body)
	}
	return ctParseInstance(t, r.Body)
}

var upConnect = regexp.MustCompile("created, connect with `(.*)`")

// chall-manager-cli against challfn: a challenge's whole life (create,
// retrieve, update with each strategy, resets, delete), an instance's
// (create, delete; the CLI has no retrieve or renew, which grpc-go does
// here), and the CLI's reading of error statuses and their details.
func TestUpstreamCLI(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	cli := testenv.ChallManager(t, "chall-manager-cli")
	ref := env.Scenario(t, "additional")
	url := "--url=" + gcTarget(env)
	run := func(args ...string) string {
		t.Helper()
		cmd := args[0]
		return upRun(t, nil, cli, append([]string{cmd, url}, args[1:]...)...)
	}

	// Create, then the CLI's own rendering of a 409.
	out := run("challenge", "create", "--id", "c1", "--scenario", ref, "--timeout", "10m", "--additional", "k=v", "--max", "4")
	upWant(t, "create", out, "[+] Challenge c1 created")
	ctSame(t, "created challenge", ctDo(t, env.URL, "GET", "/api/v1/challenge/c1", "").Body,
		`{"id":"c1","scenario":"`+ref+`","timeout":"600s","until":null,"instances":[],"additional":{"k":"v"},"min":"0","max":"4"}`)
	upWant(t, "create again", run("challenge", "create", "--id", "c1", "--scenario", ref), "[-] Already exist.")
	upWant(t, "retrieve", run("challenge", "retrieve", "--id", "c1"), "[+] Challenge c1 created using "+ref+", 0 instances")

	// Errors with details, as the CLI prints them (BadRequest violations,
	// PreconditionFailure message, Help links).
	upWant(t, "bad bounds", run("challenge", "create", "--id", "c9", "--scenario", ref, "--min", "-1"),
		"[-] Invalid arguments provided: Pooler configuration out of bounds.",
		"    - min: Minimum boundary must be a positive integer.")
	upWant(t, "unreachable registry", run("challenge", "create", "--id", "c9", "--scenario", "127.0.0.1:1/x/y:z"),
		"[-] Precondition failure: Registry is not available. You might want to try again later.",
		"    - scenario: Registry is unreachable.")
	upWant(t, "malformed reference", run("challenge", "create", "--id", "c9", "--scenario", "Not A Ref!!"),
		"[-] Invalid arguments provided: OCI reference is malformed.",
		"[?] Help:",
		"    - OCI Image Format specification GitHub repository. (https://github.com/opencontainers/image-spec)")
	if r := ctDo(t, env.URL, "GET", "/api/v1/challenge/c9", ""); r.Status != 404 {
		t.Fatalf("a refused create registered c9: %d %s", r.Status, r.Body)
	}

	// Instance: create with the CLI, then retrieve and renew over gRPC.
	out = run("instance", "create", "--challenge_id", "c1", "--source_id", "s1", "--additional", "p=1")
	m := upConnect.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("instance create: %s", out)
	}
	in := upInstance(t, env, "c1", "s1")
	if m[1] != in.Conn || !strings.HasSuffix(in.Conn, "?k=v&p=1") {
		t.Fatalf("CLI says connect with %q, the record has %q", m[1], in.Conn)
	}
	upWant(t, "instance create again", run("instance", "create", "--challenge_id", "c1", "--source_id", "s1"), "[-] Already exist.")
	conn := gcDial(t, env)
	got, err := gcCall[api.Instance](conn, gcInstance+"RetrieveInstance", &api.RetrieveInstanceRequest{ChallengeID: "c1", SourceID: "s1"})
	if err != nil || got.ConnectionInfo != in.Conn {
		t.Fatalf("retrieve over gRPC: %+v %v", got, err)
	}
	ren, err := gcCall[api.Instance](conn, gcInstance+"RenewInstance", &api.RenewInstanceRequest{ChallengeID: "c1", SourceID: "s1"})
	if err != nil || !ren.LastRenew.After(in.LastRenew) {
		t.Fatalf("renew over gRPC: %+v %v", ren, err)
	}
	upWant(t, "retrieve with an instance", run("challenge", "retrieve", "--id", "c1"), "[+] Challenge c1 created using "+ref+", 1 instances")

	// Updates: each strategy rolls the new additional out to the instance;
	// blue-green gives it a new identity (the scenario puts the identity
	// first in connection_info), the others keep it; one stack remains.
	identityOf := func(conn string) string { id, _, _ := strings.Cut(conn, "?"); return id }
	prev := identityOf(in.Conn)
	for _, c := range []struct {
		strategy string
		newID    bool
	}{{"in-place", false}, {"blue-green", true}, {"recreate", false}} {
		out := run("challenge", "update", "--id", "c1", "--additional", "k="+c.strategy, "--strategy", c.strategy)
		upWant(t, "update "+c.strategy, out, "[~] Challenge c1 updated")
		in := upInstance(t, env, "c1", "s1")
		if !strings.HasSuffix(in.Conn, "?k="+c.strategy+"&p=1") {
			t.Fatalf("%s: instance not updated: %q", c.strategy, in.Conn)
		}
		if id := identityOf(in.Conn); (id != prev) != c.newID {
			t.Fatalf("%s: identity %s → %s", c.strategy, prev, id)
		} else {
			prev = id
		}
		if s := env.Stacks(t); len(s) != 1 {
			t.Fatalf("%s: stacks %v, want the instance's only", c.strategy, s)
		}
	}

	// Masked fields and resets (a flag in the mask with no value).
	upWant(t, "update timeout", run("challenge", "update", "--id", "c1", "--timeout", "20m", "--min", "1"), "[~] Challenge c1 updated")
	c := upChallenge(t, env, "c1")
	if c["timeout"] != "1200s" || c["min"] != "1" || c["max"] != "4" {
		t.Fatalf("after timeout/min update: %v", c)
	}
	env.Broker.Wait() // the pool fill of min 1
	until := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	upWant(t, "update until", run("challenge", "update", "--id", "c1", "--until", until.Format(time.RFC3339)), "[~] Challenge c1 updated")
	if c := upChallenge(t, env, "c1"); c["until"] != until.Format(time.RFC3339) {
		t.Fatalf("until not set: %v", c["until"])
	}
	upWant(t, "reset until and timeout", run("challenge", "update", "--id", "c1", "--reset-until", "--reset-timeout"), "[~] Challenge c1 updated")
	c = upChallenge(t, env, "c1")
	if c["timeout"] != nil || c["until"] != nil || c["min"] != "1" {
		t.Fatalf("after the resets: %v", c)
	}
	if in := upInstance(t, env, "c1", "s1"); in.Until != nil {
		t.Fatalf("instance until kept after the resets: %v", in.Until)
	}
	upWant(t, "reset additional", run("challenge", "update", "--id", "c1", "--reset-additional"), "[~] Challenge c1 updated")
	if b, _ := json.Marshal(upChallenge(t, env, "c1")["additional"]); string(b) != "{}" {
		t.Fatalf("additional after the reset: %s", b)
	}
	if in := upInstance(t, env, "c1", "s1"); !strings.HasSuffix(in.Conn, "?p=1") {
		t.Fatalf("instance after the additional reset: %q", in.Conn)
	}

	// Deletions.
	upWant(t, "instance delete", run("instance", "delete", "--challenge_id", "c1", "--source_id", "s1"), "[+] Instance <c1,s1> deleted")
	ctExpect(t, "deleted instance", ctDo(t, env.URL, "GET", "/api/v1/instance/c1/s1", ""), 404, ctInstanceNotFound("c1", "s1"))
	upWant(t, "challenge delete", run("challenge", "delete", "--id", "c1"), "[-] Challenge c1 deleted")
	ctExpect(t, "deleted challenge", ctDo(t, env.URL, "GET", "/api/v1/challenge/c1", ""), 404, ctChallengeNotFound("c1"))
	env.Broker.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}

// chall-manager-janitor against challfn (one-shot, as its CronJob runs it):
// it deletes the claimed instance whose until has passed, and leaves alone
// the pooled instance of the same challenge, an instance that has time left
// and an instance of a challenge with neither timeout nor until. The expiry
// comes from the challenge's until moved to the past (no waiting on a
// clock, so a loaded machine cannot blur which run sees what).
func TestUpstreamJanitor(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	janitor := testenv.ChallManager(t, "chall-manager-janitor")
	ref := env.Scenario(t, "outputs")
	for _, body := range []string{
		`{"id":"short","scenario":"` + ref + `","timeout":"600s","min":1}`,
		`{"id":"long","scenario":"` + ref + `","timeout":"600s"}`,
		`{"id":"forever","scenario":"` + ref + `"}`,
	} {
		lcCreateChallenge(t, env, body)
	}
	env.Broker.Wait() // short's pool
	lcCreateInstances(t, env, "short", []string{"a"})
	env.Broker.Wait() // the refill after the claim
	lcCreateInstances(t, env, "long", []string{"a"})
	lcCreateInstances(t, env, "forever", []string{"a"})
	_, pooled := lcRecords(t, env, "short")
	if len(pooled) != 1 {
		t.Fatalf("short: %d pooled instances, want 1", len(pooled))
	}
	before := env.Stacks(t)
	if len(before) != 4 {
		t.Fatalf("stacks before the janitor: %v", before)
	}

	// A run before any expiry deletes nothing.
	noOTel := []string{"OTEL_TRACES_EXPORTER=none", "OTEL_LOGS_EXPORTER=none", "OTEL_METRICS_EXPORTER=none"}
	out := upRun(t, noOTel, janitor, "--url", gcTarget(env))
	if !strings.Contains(out, `"msg":"completed janitoring"`) || strings.Contains(out, `"msg":"janitoring instance"`) {
		t.Fatalf("janitor before the expiry:\n%s", out)
	}

	lcDo(t, env, "PATCH", "/api/v1/challenge/short", `{"until":"2001-02-03T04:05:06Z","updateMask":"until"}`, 200)
	out = upRun(t, noOTel, janitor, "--url", gcTarget(env))
	if !strings.Contains(out, `"msg":"completed janitoring"`) || strings.Count(out, `"msg":"janitoring instance"`) != 1 ||
		!strings.Contains(out, `"challenge_id":"short","source_id":"a"`) || strings.Contains(out, `"level":"error"`) {
		t.Fatalf("janitor after the expiry:\n%s", out)
	}
	env.Broker.Wait()
	ctExpect(t, "expired instance", ctDo(t, env.URL, "GET", "/api/v1/instance/short/a", ""), 404, ctInstanceNotFound("short", "a"))
	for _, cid := range []string{"long", "forever"} {
		upInstance(t, env, cid, "a")
	}
	claimed, pooledAfter := lcRecords(t, env, "short")
	if len(claimed) != 0 || len(pooledAfter) != 1 || pooledAfter[0].Identity != pooled[0].Identity {
		t.Fatalf("short after the janitor: claimed %v, pooled %v (before: %v)", claimed, pooledAfter, pooled)
	}
	if after := env.Stacks(t); len(after) != 3 {
		t.Fatalf("stacks after the janitor: %v (before %v)", after, before)
	}
	for _, id := range []string{"short", "long", "forever"} {
		lcDo(t, env, "DELETE", "/api/v1/challenge/"+id, "", 200)
	}
	env.Broker.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}
