package e2e

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/store"
)

// lcBySource indexes claimed records by source.
func lcBySource(ins []*store.Instance) map[string]*store.Instance {
	out := make(map[string]*store.Instance, len(ins))
	for _, in := range ins {
		out[in.SourceID] = in
	}
	return out
}

// lcRevs is identity → etcd mod revision of every record of a challenge: a
// handler that wrote anything changes it.
func lcRevs(t testing.TB, env *testenv.Env, cid string) map[string]int64 {
	t.Helper()
	claimed, pooled := lcRecords(t, env, cid)
	out := map[string]int64{}
	for _, in := range append(claimed, pooled...) {
		out[in.Identity] = in.Rev
	}
	return out
}

// lcUpdateEvents builds the update events the challenge function sends for
// the given identities (keys only: the handler reads the challenge).
func lcUpdateEvents(t testing.TB, cid string, identities []string) []cloudevents.Event {
	t.Helper()
	var out []cloudevents.Event
	for _, id := range identities {
		e, err := events.New(context.Background(), "//challfn/challenge", events.TypeInstanceUpdate, events.InstanceUpdate{
			ChallengeID: cid, Identity: id,
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

// Hot update of 20 claimed instances with each strategy (docs/contract.md §4.4,
// §4.14): every instance is brought to the new scenario (connection info
// changed), identities change with blue-green only, the old stacks are gone
// from the backend; the identical update again changes nothing; the same
// update events delivered again, late or out of order, change nothing.
func TestHotUpdate(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	outRef, addRef := env.Scenario(t, "outputs"), env.Scenario(t, "additional")
	lcCreateChallenge(t, env, `{"id":"hot","scenario":"`+outRef+`","timeout":"600s"}`)
	var sources []string
	for i := range 20 {
		sources = append(sources, fmt.Sprintf("s%02d", i))
	}
	start := time.Now()
	lcCreateInstances(t, env, "hot", sources)
	t.Logf("20 creates: %v", time.Since(start))
	claimed, _ := lcRecords(t, env, "hot")
	lcWantStacks(t, env, lcStacksOf(claimed))

	type round struct {
		strategy string
		body     string // without updateStrategy
		project  string
		newIDs   bool
		ci       func(identity string) string
	}
	outputsCI := func(id string) string { return "nc " + id + ".outputs.local 1337" }
	rounds := []round{
		// Another project: in place is a re-creation under the same identity.
		{"update_in_place", `"scenario":"` + addRef + `","updateMask":"scenario"`, "additional", false, func(id string) string { return id + "?" }},
		{"blue_green", `"scenario":"` + outRef + `","updateMask":"scenario"`, "outputs", true, outputsCI},
		{"recreate", `"scenario":"` + addRef + `","updateMask":"scenario"`, "additional", false, func(id string) string { return id + "?" }},
		// Same project, new additional: a true in-place up.
		{"update_in_place", `"additional":{"round":"4"},"updateMask":"additional"`, "additional", false, func(id string) string { return id + "?round=4" }},
	}
	var previousEvents []cloudevents.Event
	for i, r := range rounds {
		t.Run(fmt.Sprintf("%d-%s", i+1, r.strategy), func(t *testing.T) {
			before := lcBySource(claimed)
			var oldIDs []string
			for _, in := range claimed {
				oldIDs = append(oldIDs, in.Identity)
			}
			body := `{` + r.body + `,"updateStrategy":"` + r.strategy + `"}`
			start := time.Now()
			res := lcDecode[lcChallenge](t, must(t, env.URL, "PATCH", "/api/v1/challenge/hot", body, http.StatusOK))
			t.Logf("PATCH %s of 20 instances: %v", r.strategy, time.Since(start))
			env.Wait()

			c, err := env.App.Store.GetChallenge(context.Background(), "hot")
			if err != nil {
				t.Fatal(err)
			}
			claimed, _ = lcRecords(t, env, "hot")
			after := lcBySource(claimed)
			if len(after) != 20 || len(res.Instances) != 20 {
				t.Fatalf("%d records, %d instances in the response; want 20", len(after), len(res.Instances))
			}
			for _, in := range res.Instances {
				rec, old := after[in.SourceID], before[in.SourceID]
				switch {
				case rec == nil || old == nil:
					t.Fatalf("source %s: no record", in.SourceID)
				case in.ConnectionInfo != r.ci(rec.Identity) || in.ConnectionInfo == old.ConnectionInfo:
					t.Fatalf("source %s: connection info %q (was %q), want %q", in.SourceID, in.ConnectionInfo, old.ConnectionInfo, r.ci(rec.Identity))
				case r.newIDs == (rec.Identity == old.Identity):
					t.Fatalf("source %s: identity %s → %s with %s", in.SourceID, old.Identity, rec.Identity, r.strategy)
				case rec.Project != r.project || rec.Digest != c.Digest || rec.Generation != c.Generation || rec.LastError != "":
					t.Fatalf("source %s: record %+v, challenge digest %s generation %d", in.SourceID, rec, c.Digest, c.Generation)
				case !in.Since.Equal(old.Since):
					t.Fatalf("source %s: since changed %v → %v", in.SourceID, old.Since, in.Since)
				}
			}
			// Exactly the new stacks: the old ones are gone.
			lcWantStacks(t, env, lcStacksOf(claimed))

			// The same events again (this round's, to old and new
			// identities) and the previous round's (late, superseded): all
			// acknowledged, nothing written, no stack touched.
			var newIDs []string
			for _, in := range claimed {
				newIDs = append(newIDs, in.Identity)
			}
			evs := lcUpdateEvents(t, "hot", slices.Concat(oldIDs, newIDs))
			revs := lcRevs(t, env, "hot")
			sender, err := events.NewSender(env.URL+instance.EventsPath, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range append(slices.Clone(evs), previousEvents...) {
				if err := sender.Send(context.Background(), e); err != nil {
					t.Fatalf("duplicate delivery: %v", err)
				}
			}
			previousEvents = evs
			if got := lcRevs(t, env, "hot"); !maps.Equal(got, revs) {
				t.Fatalf("duplicate deliveries wrote records:\n before %v\n after  %v", revs, got)
			}
			lcWantStacks(t, env, lcStacksOf(claimed))

			if i == 0 {
				// The identical update again: a no-op for the instances.
				start := time.Now()
				must(t, env.URL, "PATCH", "/api/v1/challenge/hot", body, http.StatusOK)
				t.Logf("identical PATCH again: %v", time.Since(start))
				env.Wait()
				again, _ := lcRecords(t, env, "hot")
				for _, in := range again {
					rec := after[in.SourceID]
					if in.Identity != rec.Identity || in.ConnectionInfo != rec.ConnectionInfo || in.Generation != rec.Generation {
						t.Fatalf("identical update changed source %s: %+v → %+v", in.SourceID, rec, in)
					}
				}
				lcWantStacks(t, env, lcStacksOf(claimed))
			}
		})
		if t.Failed() {
			return
		}
	}
	must(t, env.URL, "DELETE", "/api/v1/challenge/hot", "", http.StatusOK)
	lcWantStacks(t, env, nil)
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("keys left: %v", k)
	}
}

// flakyMain is a scenario whose up fails while the file named by the
// additional value failIfExists exists: a transient failure the test controls.
const flakyMain = `package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		cfg := config.New(ctx, "")
		id := cfg.Require("identity")
		additional := map[string]string{}
		_ = json.Unmarshal([]byte(cfg.Get("additional")), &additional)
		if p := additional["failIfExists"]; p != "" {
			if _, err := os.Stat(p); err == nil {
				return fmt.Errorf("flaky: failing while %s exists", p)
			}
		}
		keys := make([]string, 0, len(additional))
		for k := range additional {
			if k != "failIfExists" {
				keys = append(keys, k+"="+additional[k])
			}
		}
		sort.Strings(keys)
		ctx.Export("connection_info", pulumi.String(id+"?"+strings.Join(keys, "&")))
		return nil
	})
}
`

// lcFlakyScenario writes the flaky scenario (the additional scenario's
// module with flakyMain) and pushes it.
func lcFlakyScenario(t testing.TB, env *testenv.Env) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(testenv.Root(), "scenarios", "additional")
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"main.go":     flakyMain,
		"Pulumi.yaml": "name: flaky\nruntime: go\ndescription: challfn e2e scenario whose up fails on demand\n",
	}
	for f, content := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return env.PushDir(t, dir, "flaky")
}

// A failed instance update is visible: the PATCH answers 500 naming every
// failed instance, their records keep the error and the generation they
// failed at, they keep serving their previous deployment; sending the same
// PATCH again retries them.
func TestHotUpdateFailureVisible(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := lcFlakyScenario(t, env)
	// The scenario runs in a jail (shared/sandbox) that shows it its own folder only:
	// the file that makes it fail is put there, in the scenario cache.
	dg, err := env.App.Scenarios.Resolve(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	flag := filepath.Join(env.App.Config.CacheDir, "scenarios", strings.TrimPrefix(dg, "sha256:"), "fail")
	lcCreateChallenge(t, env, fmt.Sprintf(`{"id":"flaky","scenario":%q,"timeout":"600s","additional":{"failIfExists":%q}}`, ref, flag))
	ins := lcCreateInstances(t, env, "flaky", []string{"a", "b", "c"})

	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"additional":{"failIfExists":%q,"v":"2"},"updateMask":"additional"}`, flag)
	body := must(t, env.URL, "PATCH", "/api/v1/challenge/flaky", patch, http.StatusInternalServerError)
	for _, sid := range []string{"a", "b", "c"} {
		if !strings.Contains(string(body), "instance of source "+sid) {
			t.Fatalf("the failure does not name source %s: %s", sid, body)
		}
	}
	env.Wait()
	c, err := env.App.Store.GetChallenge(context.Background(), "flaky")
	if err != nil {
		t.Fatal(err)
	}
	claimed, _ := lcRecords(t, env, "flaky")
	for _, in := range claimed {
		if in.FailedGeneration != c.Generation || in.Generation >= c.Generation || in.LastError == "" {
			t.Fatalf("failed update not recorded on %s: %+v (challenge generation %d)", in.SourceID, in, c.Generation)
		}
		got := lcDecode[lcInstance](t, must(t, env.URL, "GET", "/api/v1/instance/flaky/"+in.SourceID, "", http.StatusOK))
		if got.ConnectionInfo != ins[in.SourceID].ConnectionInfo {
			t.Fatalf("source %s: connection info %q after a failed update, want the previous %q", in.SourceID, got.ConnectionInfo, ins[in.SourceID].ConnectionInfo)
		}
	}
	lcWantStacks(t, env, lcStacksOf(claimed))

	// The cause is gone: the same PATCH retries and succeeds.
	if err := os.Remove(flag); err != nil {
		t.Fatal(err)
	}
	res := lcDecode[lcChallenge](t, must(t, env.URL, "PATCH", "/api/v1/challenge/flaky", patch, http.StatusOK))
	env.Wait()
	claimed, _ = lcRecords(t, env, "flaky")
	recs := lcBySource(claimed)
	for _, in := range res.Instances {
		rec := recs[in.SourceID]
		if rec == nil || in.ConnectionInfo != rec.Identity+"?v=2" || rec.Generation != c.Generation || rec.LastError != "" {
			t.Fatalf("retry of source %s: %+v / %+v", in.SourceID, in, rec)
		}
	}
	if len(res.Instances) != 3 {
		t.Fatalf("%d instances after the retry", len(res.Instances))
	}
	must(t, env.URL, "DELETE", "/api/v1/challenge/flaky", "", http.StatusOK)
	lcWantStacks(t, env, nil)
}
