package e2e

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

// ctCreateRace sends n creates of one (challenge, source) at once, spread
// over the base URLs, and checks that exactly one wins and every other gets
// the exact 409. It returns the winner's body.
func ctCreateRace(t *testing.T, bases []string, cid, sid string, n int) []byte {
	t.Helper()
	body := `{"challengeId":"` + cid + `","sourceId":"` + sid + `"}`
	resps := make([]ctResp, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			resps[i] = ctDo(t, bases[i%len(bases)], "POST", "/api/v1/instance", body)
		})
	}
	close(start)
	wg.Wait()
	var winner []byte
	statuses := map[int]int{}
	for _, r := range resps {
		statuses[r.Status]++
		switch r.Status {
		case 200:
			winner = r.Body
		case 409:
			ctSame(t, "losing create", r.Body, ctInstanceExists(cid, sid))
		}
	}
	if statuses[200] != 1 || statuses[409] != n-1 {
		t.Fatalf("%d concurrent creates of %s/%s: statuses %v, want one 200 and %d 409", n, cid, sid, statuses, n-1)
	}
	return winner
}

// ctStacksOfWinner checks the backend holds exactly the winner's stack.
func ctOneStack(t *testing.T, env *testenv.Env, winner []byte, project string) {
	t.Helper()
	in := ctParseInstance(t, winner)
	stacks := env.Stacks(t)
	if len(stacks) != 1 || !strings.HasPrefix(stacks[0], project+"/") || !strings.Contains(in.Conn, strings.TrimPrefix(stacks[0], project+"/")) {
		t.Fatalf("stacks %v for winner %s", stacks, winner)
	}
}

// 20 concurrent creates for one (challenge, source): one deployment, one 200,
// nineteen 409s, one stack; the retrieve returns the winner.
func TestRaceConcurrentCreates(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")
	if r := ctDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"race","scenario":"`+ref+`","timeout":"600s"}`); r.Status != 200 {
		t.Fatalf("challenge: %d %s", r.Status, r.Body)
	}
	winner := ctCreateRace(t, []string{env.URL}, "race", "p1", 20)
	ctOneStack(t, env, winner, "outputs")
	ctExpect(t, "retrieve winner", ctDo(t, env.URL, "GET", "/api/v1/instance/race/p1", ""), 200, string(winner))
	ctExpect(t, "delete challenge", ctDo(t, env.URL, "DELETE", "/api/v1/challenge/race", ""), 200, `{}`)
	env.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}

// ctDeleteRace creates instances of distinct sources, staggered, while the
// challenge is deleted in the middle; every create answers 200 or 404 and,
// once all is done, no record and no stack is left.
func ctDeleteRace(t *testing.T, env *testenv.Env, createBases []string, deleteBase, cid string, n int) {
	t.Helper()
	ref := env.Scenario(t, "outputs")
	if r := ctDo(t, createBases[0], "POST", "/api/v1/challenge", `{"id":"`+cid+`","scenario":"`+ref+`","timeout":"600s"}`); r.Status != 200 {
		t.Fatalf("challenge: %d %s", r.Status, r.Body)
	}
	statuses := make([]int, n)
	var del ctResp
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			// Spread over ~1.2 s: some creates are deploying when the delete
			// arrives, some arrive while it runs, some after.
			time.Sleep(time.Duration(i) * 1200 * time.Millisecond / time.Duration(n))
			r := ctDo(t, createBases[i%len(createBases)], "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":%q,"sourceId":"src%d"}`, cid, i))
			statuses[i] = r.Status
			if r.Status == 404 {
				ctSame(t, "create on a deleted challenge", r.Body, ctChallengeNotFound(cid))
			}
		})
	}
	wg.Go(func() {
		time.Sleep(400 * time.Millisecond)
		del = ctDo(t, deleteBase, "DELETE", "/api/v1/challenge/"+cid, "")
	})
	wg.Wait()
	t.Logf("creates racing the delete of %s: %v; delete: %d %s", cid, statuses, del.Status, del.Body)
	for i, s := range statuses {
		if s != 200 && s != 404 {
			t.Errorf("create %d: status %d", i, s)
		}
	}
	if del.Status != 200 {
		t.Fatalf("delete: %d %s", del.Status, del.Body)
	}
	env.Wait()
	if r := ctDo(t, deleteBase, "GET", "/api/v1/challenge/"+cid, ""); r.Status != 404 {
		t.Errorf("challenge still there: %d %s", r.Status, r.Body)
	}
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("orphans after the race: keys %v stacks %v", k, s)
	}
}

// A challenge delete racing instance creates never leaves an orphan record or
// stack.
func TestRaceDeleteChallengeVsCreates(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ctDeleteRace(t, env, []string{env.URL}, env.URL, "rdel", 8)
}

// Two sets of function handlers in this process and the real function
// binaries in two more OS processes, all against one etcd, one Pulumi
// backend and one scenario store, keep the guarantees: one winner out of 20
// creates spread over the three, and no orphan when the challenge is deleted
// by another process than the creates.
func TestRaceTwoProcesses(t *testing.T) {
	env1 := testenv.Start(t, testenv.Options{})
	env2 := testenv.Start(t, testenv.Options{Etcd: env1.Etcd, Dir: env1.Dir, Registry: env1.Registry})
	procInstance, procChallenge := ctStartFunctions(t, env1)
	ref := env1.Scenario(t, "outputs")

	// The challenge registered through the other process is visible here.
	if r := ctDo(t, procChallenge, "POST", "/api/v1/challenge", `{"id":"two","scenario":"`+ref+`","timeout":"600s"}`); r.Status != 200 {
		t.Fatalf("challenge through the challenge process: %d %s", r.Status, r.Body)
	}
	if r := ctDo(t, env2.URL, "GET", "/api/v1/challenge/two", ""); r.Status != 200 {
		t.Fatalf("challenge seen by the second handlers: %d %s", r.Status, r.Body)
	}
	winner := ctCreateRace(t, []string{env1.URL, env2.URL, procInstance}, "two", "p1", 21)
	ctOneStack(t, env1, winner, "outputs")
	for _, base := range []string{env1.URL, env2.URL, procInstance} {
		ctExpect(t, "retrieve winner from "+base, ctDo(t, base, "GET", "/api/v1/instance/two/p1", ""), 200, string(winner))
	}
	// Deleted by the OS process, from the state the winner left.
	ctExpect(t, "delete instance in the other process", ctDo(t, procInstance, "DELETE", "/api/v1/instance/two/p1", ""), 200, `{}`)
	if s := env1.Stacks(t); len(s) != 0 {
		t.Fatalf("stacks left after delete by another process: %v", s)
	}
	ctExpect(t, "delete challenge", ctDo(t, env2.URL, "DELETE", "/api/v1/challenge/two", ""), 200, `{}`)

	ctDeleteRace(t, env1, []string{env1.URL, procInstance, env2.URL}, procChallenge, "two-del", 9)
}

// ctStartFunctions builds the challenge and instance function binaries (the
// production mains) and runs them as two OS processes against env's etcd,
// Pulumi backend, scenario store and registry, events inline. It returns
// their base URLs.
func ctStartFunctions(t *testing.T, env *testenv.Env) (instanceURL, challengeURL string) {
	t.Helper()
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+string(os.PathSeparator), "./cmd/challfn-instance", "./cmd/challfn-challenge")
	build.Dir = testenv.Root()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the functions: %v\n%s", err, out)
	}
	start := func(name string) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		cmd := exec.Command(filepath.Join(bin, name))
		cmd.Env = append(os.Environ(),
			"PORT="+port,
			"LOCAL_ONLY=true",
			"ETCD_ENDPOINTS="+env.Etcd.Endpoints()[0],
			"PULUMI_BACKEND_URL=file://"+filepath.Join(env.Dir, "state"),
			"PULUMI_CONFIG_PASSPHRASE=challfn-test",
			"SCENARIO_STORE_URL=file://"+filepath.Join(env.Dir, "scenarios"),
			"CACHE_DIR="+filepath.Join(t.TempDir(), "cache"),
			"OCI_INSECURE=true",
			"CHALLFN_PULUMI="+filepath.Join(testenv.Root(), ".bin", "pulumi"),
			"LOCK_TTL=5s",
			"LOG_LEVEL=warn",
			"EVENTS_SINK_URL=",
			"OTEL_SDK_DISABLED=true",
		)
		var out bytes.Buffer
		var mu sync.Mutex
		cmd.Stdout, cmd.Stderr = ctLockedWriter{&mu, &out}, ctLockedWriter{&mu, &out}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				mu.Lock()
				t.Logf("%s output:\n%s", name, out.String())
				mu.Unlock()
			}
		})
		base := "http://127.0.0.1:" + port
		deadline := time.Now().Add(30 * time.Second)
		for {
			req, _ := ctClient.Get(base + "/healthcheck")
			if req != nil {
				req.Body.Close()
				if req.StatusCode == 200 {
					return base
				}
			}
			select {
			case <-done:
				t.Fatalf("%s exited:\n%s", name, out.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not healthy after 30 s:\n%s", name, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return start("challfn-instance"), start("challfn-challenge")
}

type ctLockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w ctLockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// Concurrent deletes of one instance: one destroys it (200), the others find
// nothing (exact 404); the source can then create again; concurrent deletes of
// the challenge all succeed or say it is gone, and leave nothing.
func TestRaceConcurrentDeletes(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	ref := env.Scenario(t, "outputs")
	u := env.URL
	if r := ctDo(t, u, "POST", "/api/v1/challenge", `{"id":"rdi","scenario":"`+ref+`","timeout":"600s"}`); r.Status != 200 {
		t.Fatalf("challenge: %d %s", r.Status, r.Body)
	}
	if r := ctDo(t, u, "POST", "/api/v1/instance", `{"challengeId":"rdi","sourceId":"p"}`); r.Status != 200 {
		t.Fatalf("instance: %d %s", r.Status, r.Body)
	}
	race := func(n int, method, path, body string) []ctResp {
		out := make([]ctResp, n)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() { <-start; out[i] = ctDo(t, u, method, path, body) })
		}
		close(start)
		wg.Wait()
		return out
	}
	ok := 0
	for _, r := range race(5, "DELETE", "/api/v1/instance/rdi/p", "") {
		switch r.Status {
		case 200:
			ok++
			ctSame(t, "delete", r.Body, `{}`)
		default:
			ctExpect(t, "losing delete", r, 404, ctInstanceNotFound("rdi", "p"))
		}
	}
	if ok != 1 {
		t.Errorf("%d deletes succeeded, want 1", ok)
	}
	if s := env.Stacks(t); len(s) != 0 {
		t.Errorf("stacks after deletes: %v", s)
	}
	winner := ctCreateRace(t, []string{u}, "rdi", "p", 4)
	ctOneStack(t, env, winner, "outputs")
	for _, r := range race(4, "DELETE", "/api/v1/challenge/rdi", "") {
		if r.Status != 200 {
			ctExpect(t, "concurrent challenge delete", r, 404, ctChallengeNotFound("rdi"))
		}
	}
	env.Wait()
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}
