package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/scenario"
)

// fltRuns is how many times each fault is injected (recovery times are the
// median).
const fltRuns = 3

// fltRetry sends the same request until it gets want (or timeout) and
// returns how long that took after since, and the answers that were not want.
func fltRetry(t testing.TB, base, method, path, body string, want int, since time.Time, timeout time.Duration) (time.Duration, []string) {
	t.Helper()
	var others []string
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		r := send(ctx, base, method, path, body)
		cancel()
		if r.Err == nil && r.Status == want {
			return time.Since(since), others
		}
		others = append(others, fmt.Sprintf("%d %v %s", r.Status, r.Err, r.Body))
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: no %d within %s: %v", method, path, want, timeout, others)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A function process killed (kill -9, its engine processes with it) at every
// point that matters, then the same work asked of a surviving process: locks
// free within the lease TTL (2 s), no record without a stack or stack without
// record once the janitor ran, the retried request succeeds, and the
// instances count matches the stacks. The killed engines leave their stacks
// locked: the surviving process breaks such a lock at once, since it runs the
// engine only on stacks it holds the instance lock of (iac.Config.ExclusiveStacks),
// so the retry succeeds as soon as the dead process's etcd locks expired.
func TestFaultKill(t *testing.T) {
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	ref := fltPush(t, s, "additional")
	inline := map[string]string{"TESTSERVER_EVENTS": "inline"}
	b := fltStart(t, s, inline)
	must(t, b.URL, "POST", "/api/v1/challenge", `{"id":"k","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)

	t.Run("during up", func(t *testing.T) {
		var locks, recov []time.Duration
		for run := range fltRuns {
			a := fltStart(t, s, inline)
			body := fmt.Sprintf(`{"challengeId":"k","sourceId":"up-%d","additional":{"sleep":"3s"}}`, run)
			res := make(chan reply, 1)
			go func() { res <- send(context.Background(), a.URL, "POST", "/api/v1/instance", body) }()
			fltWaitPulumiLock(t, s, fltPulumiLocks(s), 1, 30*time.Second)
			time.Sleep(500 * time.Millisecond) // the program runs (sleeps)
			killed := time.Now()
			a.Kill()
			if r := <-res; r.Err == nil {
				t.Fatalf("run %d: the killed process answered %d %s", run, r.Status, r.Body)
			}
			fltWaitGone(t, s, "lock/", 10*time.Second)
			locks = append(locks, time.Since(killed))
			if k := fltKeys(t, s, "resv/"); len(k) != 0 {
				t.Fatalf("run %d: reservation outlived the lock lease: %v", run, k)
			}
			d, others := fltRetry(t, b.URL, "POST", "/api/v1/instance", body, http.StatusOK, killed, 60*time.Second)
			recov = append(recov, d)
			t.Logf("run %d: locks free %s after the kill, retry succeeded %s after it; other answers: %v", run, locks[run], d, others)
		}
		if recs := fltRecords(t, s); len(recs) != fltRuns {
			t.Fatalf("records %v, want %d", recs, fltRuns)
		}
		t.Logf("stacks before the janitor: %v", fltStacks(t, s))
		repair, runs := fltRepair(t, s, b, 60*time.Second)
		fltAccounted(t, s)
		t.Logf("FIGURES kill during up: requests failed %d (the killed ones), lock free median %s, retry success median %s; janitor repaired the leaks %s after the last run (%d runs)",
			fltRuns, median(locks), median(recov), repair, runs)
	})

	t.Run("during destroy (instance writer lock)", func(t *testing.T) {
		// Each deletion is killed as soon as its engine holds the stack;
		// the retries come afterwards, so the stale-lock waits overlap.
		var killed time.Time
		killedAt := make([]time.Time, fltRuns)
		for run := range fltRuns {
			must(t, b.URL, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"k","sourceId":"del-%d"}`, run), http.StatusOK)
			a := fltStart(t, s, inline)
			before := fltPulumiLocks(s)
			res := make(chan reply, 1)
			go func() {
				res <- send(context.Background(), a.URL, "DELETE", fmt.Sprintf("/api/v1/instance/k/del-%d", run), "")
			}()
			fltWaitPulumiLock(t, s, before, 1, 30*time.Second)
			killed = time.Now()
			killedAt[run] = killed
			a.Kill()
			if r := <-res; r.Err == nil {
				t.Fatalf("run %d: answered before the kill: %d %s", run, r.Status, r.Body)
			}
		}
		fltWaitGone(t, s, "lock/", 10*time.Second)
		lockFree := time.Since(killed)
		var recov []time.Duration
		failed := 0
		for run := range fltRuns {
			path := fmt.Sprintf("/api/v1/instance/k/del-%d", run)
			d, others := fltRetry(t, b.URL, "DELETE", path, "", http.StatusOK, killedAt[run], 60*time.Second)
			if r := send(context.Background(), b.URL, "GET", path, ""); r.Status != http.StatusNotFound {
				t.Fatalf("run %d: deleted instance still served: %d %s", run, r.Status, r.Body)
			}
			// The dead engine's stack lock is broken at once: the first
			// retry after the etcd locks expired succeeds.
			if len(others) != 0 {
				t.Fatalf("run %d: retried DELETE answered %v before succeeding", run, others)
			}
			failed += len(others)
			recov = append(recov, d)
			t.Logf("run %d: retried DELETE succeeded %s after the kill; answers before: %d (%s)", run, d, len(others), fltFirst(others))
		}
		fltRepair(t, s, b, 60*time.Second)
		fltAccounted(t, s)
		t.Logf("FIGURES kill during destroy: locks free %s after the last kill; the retried DELETEs (one after the other, each destroying its stack) succeed after median %s from their kill, %d retries failed",
			lockFree, median(recov), failed)
	})

	t.Run("during a blue-green update", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			id := fmt.Sprintf("bg-%d", run)
			must(t, b.URL, "POST", "/api/v1/challenge", `{"id":"`+id+`","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)
			before := ctParseInstance(t, must(t, b.URL, "POST", "/api/v1/instance", `{"challengeId":"`+id+`","sourceId":"p"}`, http.StatusOK))
			a := fltStart(t, s, inline)
			locks := fltPulumiLocks(s)
			patch := `{"additional":{"sleep":"3s","run":"` + id + `"},"updateMask":"additional","updateStrategy":"blue_green"}`
			res := make(chan reply, 1)
			go func() { res <- send(context.Background(), a.URL, "PATCH", "/api/v1/challenge/"+id, patch) }()
			fltWaitPulumiLock(t, s, locks, 1, 30*time.Second)
			time.Sleep(500 * time.Millisecond)
			killed := time.Now()
			a.Kill()
			if r := <-res; r.Err == nil {
				t.Fatalf("run %d: the killed process answered %d %s", run, r.Status, r.Body)
			}
			d, others := fltRetry(t, b.URL, "PATCH", "/api/v1/challenge/"+id, patch, http.StatusOK, killed, 90*time.Second)
			recov = append(recov, d)
			after := ctParseInstance(t, must(t, b.URL, "GET", "/api/v1/instance/"+id+"/p", "", http.StatusOK))
			if after.Conn == before.Conn || !strings.Contains(after.Conn, "run="+id) {
				t.Fatalf("run %d: instance after the retried blue-green update: %q (before %q)", run, after.Conn, before.Conn)
			}
			t.Logf("run %d: retried update succeeded %s after the kill; other answers: %v", run, d, others)
		}
		fltRepair(t, s, b, 60*time.Second)
		fltAccounted(t, s)
		for run := range fltRuns {
			must(t, b.URL, "DELETE", fmt.Sprintf("/api/v1/challenge/bg-%d", run), "", http.StatusOK)
		}
		t.Logf("FIGURES kill during a blue-green update: retried update succeeds after median %s", median(recov))
	})

	t.Run("during a challenge deletion", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			id := fmt.Sprintf("cd-%d", run)
			must(t, b.URL, "POST", "/api/v1/challenge", `{"id":"`+id+`","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)
			for _, sid := range []string{"p", "q"} {
				must(t, b.URL, "POST", "/api/v1/instance", `{"challengeId":"`+id+`","sourceId":"`+sid+`"}`, http.StatusOK)
			}
			a := fltStart(t, s, inline)
			locks := fltPulumiLocks(s)
			res := make(chan reply, 1)
			go func() { res <- send(context.Background(), a.URL, "DELETE", "/api/v1/challenge/"+id, "") }()
			fltWaitPulumiLock(t, s, locks, 1, 30*time.Second)
			killed := time.Now()
			a.Kill()
			if r := <-res; r.Err == nil {
				t.Fatalf("run %d: the killed process answered %d %s", run, r.Status, r.Body)
			}
			d, others := fltRetry(t, b.URL, "DELETE", "/api/v1/challenge/"+id, "", http.StatusOK, killed, 90*time.Second)
			recov = append(recov, d)
			must(t, b.URL, "GET", "/api/v1/challenge/"+id, "", http.StatusNotFound)
			t.Logf("run %d: retried DELETE succeeded %s after the kill; other answers: %v", run, d, others)
		}
		fltRepair(t, s, b, 60*time.Second)
		fltAccounted(t, s)
		t.Logf("FIGURES kill during a challenge deletion: retried DELETE succeeds after median %s", median(recov))
	})

	t.Run("holding the challenge writer lock", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			id := fmt.Sprintf("cw-%d", run)
			a := fltStart(t, s, inline)
			body := `{"id":"` + id + `","scenario":"` + ref + `","timeout":"600s"}`
			go send(context.Background(), a.URL, "POST", "/api/v1/challenge", body)
			fltWaitKey(t, s, "lock/c/"+id+"/w/", 30*time.Second)
			killed := time.Now()
			a.Kill()
			if r := send(context.Background(), b.URL, "GET", "/api/v1/challenge/"+id, ""); r.Status != http.StatusNotFound {
				t.Fatalf("half-registered challenge served: %d %s", r.Status, r.Body)
			}
			d, others := fltRetry(t, b.URL, "POST", "/api/v1/challenge", body, http.StatusOK, killed, 60*time.Second)
			recov = append(recov, d)
			t.Logf("run %d: retried create succeeded %s after the kill; other answers: %v", run, d, others)
			must(t, b.URL, "DELETE", "/api/v1/challenge/"+id, "", http.StatusOK)
		}
		fltRepair(t, s, b, 60*time.Second) // preview stacks of killed registrations
		fltAccounted(t, s)
		t.Logf("FIGURES kill holding the challenge writer lock: retried create succeeds after median %s", median(recov))
	})

	t.Run("holding the pool lock", func(t *testing.T) {
		// The fill event of a min=1 challenge is killed mid-deployment; the
		// surviving process's janitor refills once the lock expired.
		var recov []time.Duration
		for run := range fltRuns {
			id := fmt.Sprintf("pl-%d", run)
			a := fltStart(t, s, nil) // events through its own broker
			before := fltPulumiLocks(s)
			must(t, a.URL, "POST", "/api/v1/challenge", `{"id":"`+id+`","scenario":"`+ref+`","timeout":"600s","min":1,"max":2}`, http.StatusOK)
			fltWaitKey(t, s, "lock/i/"+id+"/pool/w/", 30*time.Second)
			fltWaitPulumiLock(t, s, before, 1, 30*time.Second)
			killed := time.Now()
			a.Kill()
			for {
				fltJanitor(t, b)
				if n, err := s.Store.PoolCounts(context.Background(), id); err == nil && n.Pooled == 1 {
					break
				}
				if time.Since(killed) > 60*time.Second {
					t.Fatalf("pool of %s not refilled", id)
				}
				time.Sleep(200 * time.Millisecond)
			}
			recov = append(recov, time.Since(killed))
			t.Logf("run %d: pool refilled %s after the kill", run, recov[run])
		}
		fltRepair(t, s, b, 60*time.Second)
		fltAccounted(t, s)
		for run := range fltRuns {
			must(t, b.URL, "DELETE", fmt.Sprintf("/api/v1/challenge/pl-%d", run), "", http.StatusOK)
		}
		t.Logf("FIGURES kill holding the pool lock: pool refilled after median %s", median(recov))
	})

	t.Run("holding the janitor lock", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			// A leak for the janitor to destroy makes its run last.
			fltLeak(t, s, b, "k")
			a := fltStart(t, s, inline)
			fltJanitor(t, a) // first sight: a suspect
			time.Sleep(1100 * time.Millisecond)
			go fltJanitorAsync(a)
			fltWaitKey(t, s, "lock/s/janitor/", 30*time.Second)
			killed := time.Now()
			a.Kill()
			fltWaitGone(t, s, "lock/", 10*time.Second)
			fltRepair(t, s, b, 60*time.Second)
			recov = append(recov, time.Since(killed))
			t.Logf("run %d: leak repaired by another process %s after the kill", run, recov[run])
		}
		fltAccounted(t, s)
		t.Logf("FIGURES kill holding the janitor lock: repaired after median %s", median(recov))
	})

	t.Run("between the etcd write and the response", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			a := fltStart(t, s, map[string]string{"TESTSERVER_EVENTS": "inline", "TESTSERVER_HOLD": "5s"})
			sid := fmt.Sprintf("w-%d", run)
			body := `{"challengeId":"k","sourceId":"` + sid + `"}`
			res := make(chan reply, 1)
			go func() { res <- send(context.Background(), a.URL, "POST", "/api/v1/instance", body) }()
			fltWaitKey(t, s, "src/"+sid+"/k", 60*time.Second)
			killed := time.Now()
			a.Kill()
			if r := <-res; r.Err == nil {
				t.Fatalf("run %d: the killed process answered %d %s", run, r.Status, r.Body)
			}
			// The retried create finds the instance (409, as for any second
			// create); the player's instance is there, nothing was lost.
			must(t, b.URL, "POST", "/api/v1/instance", body, http.StatusConflict)
			d, _ := fltRetry(t, b.URL, "GET", "/api/v1/instance/k/"+sid, "", http.StatusOK, killed, 10*time.Second)
			recov = append(recov, d)
		}
		fltWaitGone(t, s, "lock/", 10*time.Second)
		fltAccounted(t, s)
		t.Logf("FIGURES kill between the etcd write and the response: instance served by another process after median %s, data lost 0", median(recov))
	})
}

// Nothing outlives its owner (issue 11): a function process ended in the middle of a
// create, while its engine, the supervisor, the language host, a resource provider, the
// jailed program and the program's daemons all run (scenarios/attacker), by kill -9 of
// its process group, kill -9 of the process alone, or SIGTERM: every one of them is gone
// soon after (fltProc.end counts them). The provider's Service is a deployed resource,
// in a session of its own: it stays, for the janitor to destroy with its stack.
func TestFaultNothingOutlives(t *testing.T) {
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	ref := fltPush(t, s, "attacker")
	// The operation must outlast the wait for its whole tree; its stack lock is broken
	// DEPLOY_TIMEOUT + 10 s after the kill (shared/iac/stale.go).
	slow := map[string]string{"TESTSERVER_EVENTS": "inline", "DEPLOY_TIMEOUT": "20s"}
	b := fltStart(t, s, slow)
	must(t, b.URL, "POST", "/api/v1/challenge", `{"id":"o","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)
	var services []int
	t.Cleanup(func() {
		for _, pid := range services {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	for i, tc := range []struct {
		name string
		end  func(*fltProc) time.Duration
	}{
		{"kill -9 of the process group", (*fltProc).Kill},
		{"kill -9 of the process alone", (*fltProc).KillAlone},
		{"SIGTERM", (*fltProc).Term},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := fltStart(t, s, slow)
			m := fmt.Sprintf("outlive-daemon-%d-%d", i, time.Now().UnixNano())
			body := fmt.Sprintf(`{"challengeId":"o","sourceId":"out-%d","additional":{"mode":"attack","marker":%q,"service":"yes","sleep":"90s"}}`, i, m)
			go send(context.Background(), a.URL, "POST", "/api/v1/instance", body)
			kinds := map[string]int{}
			var tree []fltPS
			for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(50 * time.Millisecond) {
				tree = fltTree(a.cmd.Process.Pid, a.owner)
				kinds = fltKinds(tree, m)
				if kinds["engine"] > 0 && kinds["supervisor"] > 0 && kinds["language host"] > 0 && kinds["provider"] > 0 &&
					kinds["jail"] > 0 && kinds["program"] > 0 && kinds["daemon"] >= 3 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the tree never ran whole: %v\n%v", kinds, tree)
				}
			}
			for _, q := range fltProcs() {
				if strings.Contains(q.desc, "pulumi-resource-challfn-local serve") && slices.ContainsFunc(tree, func(p fltPS) bool { return p.pid == q.ppid }) {
					services = append(services, q.pid)
				}
			}
			took := tc.end(a)
			t.Logf("FIGURES %s during a create: %d processes (%v) all gone %s after", tc.name, len(tree), kinds, took)
		})
	}
	// The janitor destroys the leaked stacks, and with them the Services their state
	// knows. A Service the engine was killed before recording is a leaked resource, as a
	// cloud resource would be: not a process of the tree (the cleanup kills it).
	fltRepair(t, s, b, 90*time.Second)
	leaked := 0
	for _, pid := range services {
		if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); err == nil {
			leaked++
		}
	}
	t.Logf("Services: %d deployed, %d not in their stack's state when the engine was killed", len(services), leaked)
}

// fltKinds counts the processes of a function's tree by what they are.
func fltKinds(tree []fltPS, daemon string) map[string]int {
	kinds := map[string]int{}
	for _, q := range tree {
		switch {
		case strings.Contains(q.desc, daemon), strings.HasPrefix(q.desc, "sleep 3599."):
			kinds["daemon"]++
		case strings.Contains(q.desc, "challfn-sandbox engine"):
			kinds["supervisor"]++
		case strings.Contains(q.desc, "challfn-sandbox jail"):
			kinds["jail"]++
		case strings.Contains(q.desc, "pulumi-language-go"):
			kinds["language host"]++
		case strings.Contains(q.desc, "pulumi-resource-"):
			kinds["provider"]++
		case strings.HasPrefix(q.desc, filepath.Join(testenv.Root(), ".bin", "pulumi")+" "):
			kinds["engine"]++
		case strings.Contains(q.desc, "/scenarios/"):
			kinds["program"]++
		default:
			kinds["other: "+q.desc]++
		}
	}
	return kinds
}

func fltFirst(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// A function process frozen (SIGSTOP) in the middle of a create, longer than
// its lock lease, while its engine runs on: another process gets the lock
// after the TTL and creates the source's instance; when the frozen one
// resumes, its commit is fenced (its lock keys are gone), it destroys the
// stack it made and answers an error, and the other process's instance is
// intact.
func TestFaultFrozen(t *testing.T) {
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	ref := fltPush(t, s, "additional")
	inline := map[string]string{"TESTSERVER_EVENTS": "inline"}
	b := fltStart(t, s, inline)
	must(t, b.URL, "POST", "/api/v1/challenge", `{"id":"fz","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)

	var recov []time.Duration
	for run := range fltRuns {
		a := fltStart(t, s, inline)
		sid := fmt.Sprintf("src-%d", run)
		res := make(chan reply, 1)
		go func() {
			res <- send(context.Background(), a.URL, "POST", "/api/v1/instance", `{"challengeId":"fz","sourceId":"`+sid+`","additional":{"sleep":"3s"}}`)
		}()
		fltWaitPulumiLock(t, s, fltPulumiLocks(s), 1, 30*time.Second)
		a.Stop()
		stopped := time.Now()
		fltWaitGone(t, s, "lock/", 10*time.Second) // the lease expired
		d, others := fltRetry(t, b.URL, "POST", "/api/v1/instance", `{"challengeId":"fz","sourceId":"`+sid+`"}`, http.StatusOK, stopped, 60*time.Second)
		recov = append(recov, d)
		won := must(t, b.URL, "GET", "/api/v1/instance/fz/"+sid, "", http.StatusOK)

		a.Cont()
		var r reply
		select {
		case r = <-res:
		case <-time.After(60 * time.Second):
			t.Fatalf("run %d: the resumed process never answered", run)
		}
		if r.Err != nil || r.Status != http.StatusServiceUnavailable {
			t.Fatalf("run %d: the resumed process answered %d %v %s, want 503", run, r.Status, r.Err, r.Body)
		}
		m := ctErrShape(t, "fenced create", r)
		if m["code"] != json.Number("14") {
			t.Fatalf("run %d: fenced create: code %v, want 14", run, m["code"])
		}
		if got := must(t, b.URL, "GET", "/api/v1/instance/fz/"+sid, "", http.StatusOK); string(got) != string(won) {
			t.Fatalf("run %d: the winner's instance changed after the frozen process resumed:\n%s\n%s", run, won, got)
		}
		fltAccounted(t, s)
		t.Logf("run %d: other process created the instance %s after the freeze (earlier answers %v); resumed process answered %d %v",
			run, d, others, r.Status, m["message"])
		a.Kill()
	}
	t.Logf("FIGURES frozen process: another process proceeds after median %s (TTL 2s), stale writes 0, data lost 0", median(recov))
}

// fltOutcome is one answer of the load.
type fltOutcome struct {
	route  string
	status int
	err    error
	body   string
	dur    time.Duration
}

// fltLoad runs players against the processes (round robin) until stop is
// closed: create, retrieve, renew, delete, one source after another.
func fltLoad(bases []string, cid string, players int, stop <-chan struct{}) func() []fltOutcome {
	out := make(chan fltOutcome, 1<<16)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for p := range players {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				base := bases[(p+n)%len(bases)]
				sid := fmt.Sprintf("p%d-%d", p, n)
				steps := []struct{ route, method, path, body string }{
					{"create", "POST", "/api/v1/instance", `{"challengeId":"` + cid + `","sourceId":"` + sid + `"}`},
					{"retrieve", "GET", "/api/v1/instance/" + cid + "/" + sid, ""},
					{"renew", "PATCH", "/api/v1/instance/" + cid + "/" + sid, ""},
					{"delete", "DELETE", "/api/v1/instance/" + cid + "/" + sid, ""},
				}
				for _, st := range steps {
					ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
					start := time.Now()
					r := send(ctx, base, st.method, st.path, st.body)
					// A player retries a DELETE answered 503 (nothing else:
					// a failed create is simply asked again as a new one).
					for tries := 0; st.route == "delete" && r.Err == nil && r.Status == http.StatusServiceUnavailable && tries < 600; tries++ {
						out <- fltOutcome{st.route, r.Status, r.Err, string(r.Body), time.Since(start)}
						time.Sleep(100 * time.Millisecond)
						start = time.Now()
						r = send(ctx, base, st.method, st.path, st.body)
					}
					cancel()
					out <- fltOutcome{st.route, r.Status, r.Err, string(r.Body), time.Since(start)}
					if r.Err != nil || r.Status != http.StatusOK {
						if st.route == "create" {
							break
						}
					}
				}
			}
		})
	}
	go func() { wg.Wait(); close(done) }()
	return func() []fltOutcome {
		<-done
		close(out)
		var all []fltOutcome
		for o := range out {
			all = append(all, o)
		}
		return all
	}
}

// fltProbe sends GET challenge until it succeeds and returns how long that
// took, with every failed answer.
func fltProbe(base, cid string, timeout time.Duration) (time.Duration, []string) {
	start := time.Now()
	var fails []string
	for time.Since(start) < timeout {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		r := send(ctx, base, "GET", "/api/v1/challenge/"+cid, "")
		cancel()
		if r.Err == nil && r.Status == http.StatusOK {
			return time.Since(start), fails
		}
		fails = append(fails, fmt.Sprintf("%d %v %.80s", r.Status, r.Err, r.Body))
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start), fails
}

// A 3-member etcd cluster (Debian etcd processes) under load from two
// function processes: losing one member (the leader) fails nothing beyond
// the retryable 503; losing two (quorum) makes every request answer 503 in
// the contract's shape instead of hanging, writes nothing half-way, and the
// service recovers fully when the members return.
func TestFaultEtcd(t *testing.T) {
	c := fltStartCluster(t)
	s := fltSetup(t, c.Endpoints())
	ref := fltPush(t, s, "outputs")
	inline := map[string]string{"TESTSERVER_EVENTS": "inline"}
	a, b := fltStart(t, s, inline), fltStart(t, s, inline)
	must(t, a.URL, "POST", "/api/v1/challenge", `{"id":"e","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)
	bases := []string{a.URL, b.URL}

	stop := make(chan struct{})
	results := fltLoad(bases, "e", 3, stop)
	time.Sleep(2 * time.Second)

	// One member down, three times: the leader each time.
	var oneRecov []time.Duration
	for run := range fltRuns {
		leader := c.Leader(t)
		if leader == nil {
			t.Fatal("no leader")
		}
		c.Kill(leader)
		d, fails := fltProbe(bases[run%2], "e", 60*time.Second)
		oneRecov = append(oneRecov, d)
		t.Logf("leader %s killed: first request answered after %s (failed answers: %v)", leader.name, d, fails)
		time.Sleep(2 * time.Second)
		c.Start(t, leader)
		c.WaitLeader(t, 30*time.Second)
		time.Sleep(2 * time.Second)
	}
	close(stop)
	phase1 := results()
	fltJudge(t, "one member down", phase1)

	// Quorum lost.
	stop = make(chan struct{})
	results = fltLoad(bases, "e", 3, stop)
	time.Sleep(2 * time.Second)
	leader := c.Leader(t)
	var other *fltMember
	for _, m := range c.members {
		if m != leader {
			other = m
			break
		}
	}
	c.Kill(leader)
	c.Kill(other)
	lost := time.Now()
	time.Sleep(3 * time.Second)
	var lat []time.Duration
	for i, req := range []struct{ method, path, body string }{
		{"POST", "/api/v1/instance", `{"challengeId":"e","sourceId":"q"}`},
		{"GET", "/api/v1/instance/e/q", ""},
		{"GET", "/api/v1/challenge/e", ""},
		{"PATCH", "/api/v1/instance/e/q", ""},
		{"DELETE", "/api/v1/instance/e/q", ""},
		{"POST", "/api/v1/challenge", `{"id":"q","scenario":"` + ref + `"}`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		start := time.Now()
		r := send(ctx, bases[i%2], req.method, req.path, req.body)
		cancel()
		lat = append(lat, time.Since(start))
		if r.Err != nil || r.Status != http.StatusServiceUnavailable {
			t.Errorf("quorum lost: %s %s: %d %v %s, want 503", req.method, req.path, r.Status, r.Err, r.Body)
			continue
		}
		m := ctErrShape(t, "quorum lost", r)
		if m["code"] != json.Number("14") {
			t.Errorf("quorum lost: %s %s: code %v, want 14 (UNAVAILABLE)", req.method, req.path, m["code"])
		}
	}
	t.Logf("quorum lost: answer latencies %v", lat)
	if r := send(context.Background(), a.URL, "GET", "/healthcheck", ""); r.Status != http.StatusServiceUnavailable {
		t.Errorf("health with quorum lost: %d %s, want 503", r.Status, r.Body)
	}
	c.Start(t, leader)
	c.Start(t, other)
	back := time.Now()
	d, _ := fltProbe(a.URL, "e", 60*time.Second)
	t.Logf("quorum back: first request answered %s after the restart (%s after the loss)", d, time.Since(lost))
	time.Sleep(2 * time.Second)
	close(stop)
	phase2 := results()
	fltJudge(t, "quorum lost", phase2)
	_ = back

	// Nothing half-written: records, stacks and counts agree once the
	// janitor repaired what interrupted creates left.
	fltRepair(t, s, a, 90*time.Second)
	fltWaitGone(t, s, "lock/", 10*time.Second)
	fltAccounted(t, s)
	must(t, b.URL, "POST", "/api/v1/instance", `{"challengeId":"e","sourceId":"after"}`, http.StatusOK)
	t.Logf("FIGURES etcd: one member down: first request after median %s; quorum lost: 503 after %v (max); recovery %s after the members returned",
		median(oneRecov), slices.Max(lat), d)
}

// fltJudge wants every outcome to be a success or a retryable 503.
func fltJudge(t testing.TB, phase string, outs []fltOutcome) {
	t.Helper()
	per := map[string][]time.Duration{}
	codes := map[string]int{}
	for _, o := range outs {
		per[o.route] = append(per[o.route], o.dur)
		key := fmt.Sprintf("%s %d", o.route, o.status)
		if o.err != nil {
			key = o.route + " error"
		}
		codes[key]++
		switch {
		case o.err != nil:
			t.Errorf("%s: %s: %v", phase, o.route, o.err)
		case o.status == http.StatusOK, o.status == http.StatusServiceUnavailable:
		default:
			t.Errorf("%s: %s: %d %s", phase, o.route, o.status, o.body)
		}
	}
	t.Logf("%s: %d requests, answers %v", phase, len(outs), codes)
}

// etcd unreachable at cold start: the process serves, its health endpoint
// answers 503 naming the cause, and every API route a 503 in the contract's
// shape.
func TestFaultColdStartWithoutEtcd(t *testing.T) {
	s := fltSetup(t, etcdtest.Server(t).Endpoints())
	p := fltStart(t, s, map[string]string{"ETCD_ENDPOINTS": "http://" + fltFreePort(t)})
	r := send(context.Background(), p.URL, "GET", "/healthcheck", "")
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "etcd") {
		t.Fatalf("health: %d %s, want 503 naming etcd", r.Status, r.Body)
	}
	for _, req := range [][2]string{{"POST", "/api/v1/challenge"}, {"GET", "/api/v1/instance/a/b"}} {
		r := send(context.Background(), p.URL, req[0], req[1], `{"id":"x"}`)
		if r.Status != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: %d %s, want 503", req[0], req[1], r.Status, r.Body)
		}
		if m := ctErrShape(t, req[1], r); m["code"] != json.Number("14") {
			t.Fatalf("%s %s: code %v, want 14", req[0], req[1], m["code"])
		}
	}
}

// Registry and engine failures: a registry that is down or answers garbage
// at registration is a clear 4xx and registers nothing; instance creation
// never talks to the registry (a fresh process creates with the registry
// stopped); an unwritable Pulumi backend and a crashing engine are clear
// errors that leave no record, reservation or stack behind.
func TestFaultEngineAndRegistry(t *testing.T) {
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	ref := fltPush(t, s, "outputs")
	inline := map[string]string{"TESTSERVER_EVENTS": "inline"}
	a := fltStart(t, s, inline)
	must(t, a.URL, "POST", "/api/v1/challenge", `{"id":"r","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)
	nothingLeft := func(t *testing.T, what string) {
		t.Helper()
		if k := fltKeys(t, s, "chall/"+what); what != "" && len(k) != 0 {
			t.Fatalf("half-registered challenge: %v", k)
		}
		fltAccounted(t, s)
	}

	t.Run("registry down at registration", func(t *testing.T) {
		down := "127.0.0.1:" + strings.Split(fltFreePort(t), ":")[1] + "/scenarios/outputs:latest"
		r := send(context.Background(), a.URL, "POST", "/api/v1/challenge", `{"id":"down","scenario":"`+down+`"}`)
		if r.Status != http.StatusBadRequest {
			t.Fatalf("%d %s, want 400", r.Status, r.Body)
		}
		t.Logf("answer: %s", r.Body)
		nothingLeft(t, "down")
	})

	t.Run("registry answering garbage at registration", func(t *testing.T) {
		garbage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", "sha256:0000000000000000000000000000000000000000000000000000000000000000")
			_, _ = w.Write([]byte("\\x00{not json at all"))
		}))
		defer garbage.Close()
		bad := strings.TrimPrefix(garbage.URL, "http://") + "/scenarios/outputs:latest"
		r := send(context.Background(), a.URL, "POST", "/api/v1/challenge", `{"id":"garbage","scenario":"`+bad+`"}`)
		if r.Status < 400 || r.Status == http.StatusOK {
			t.Fatalf("%d %s, want an error", r.Status, r.Body)
		}
		ctErrShape(t, "garbage registry", r)
		t.Logf("answer: %d %s", r.Status, r.Body)
		nothingLeft(t, "garbage")
	})

	t.Run("registry that never answers at registration", func(t *testing.T) {
		// Accepts connections, reads nothing, answers nothing.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		var held []net.Conn
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		hung := l.Addr().String() + "/scenarios/outputs:latest"
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // a hang, not a slow answer
		defer cancel()
		start := time.Now()
		r := send(ctx, a.URL, "POST", "/api/v1/challenge", `{"id":"hung","scenario":"`+hung+`"}`)
		took := time.Since(start)
		if r.Status != http.StatusBadRequest || !strings.Contains(string(r.Body), "Registry is unreachable.") {
			t.Fatalf("%d %s, want 400 unreachable", r.Status, r.Body)
		}
		t.Logf("FIGURES hung registry: registration answered in %s (bound: scenario.RegistryTimeout %s): %s", took.Round(time.Millisecond), scenario.RegistryTimeout, r.Body)
		// The challenge's lock is free: the same id registers at once.
		must(t, a.URL, "POST", "/api/v1/challenge", `{"id":"hung","scenario":"`+ref+`"}`, http.StatusOK)
		must(t, a.URL, "DELETE", "/api/v1/challenge/hung", "", http.StatusOK)
		nothingLeft(t, "hung")
	})

	t.Run("registry stopped at instance creation", func(t *testing.T) {
		s.Registry.Close()
		fresh := fltStart(t, s, inline) // cold: empty scenario cache
		must(t, fresh.URL, "POST", "/api/v1/instance", `{"challengeId":"r","sourceId":"noreg"}`, http.StatusOK)
		must(t, fresh.URL, "DELETE", "/api/v1/instance/r/noreg", "", http.StatusOK)
		nothingLeft(t, "")
	})

	t.Run("backend unwritable", func(t *testing.T) {
		// Root ignores file modes: the backend directory is replaced by a
		// file, so that every write below it fails.
		state := filepath.Join(s.Dir, "state")
		if err := os.Rename(state, state+".away"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(state, []byte("not a directory"), 0o444); err != nil {
			t.Fatal(err)
		}
		r := send(context.Background(), a.URL, "POST", "/api/v1/instance", `{"challengeId":"r","sourceId":"ro"}`)
		if err := os.Remove(state); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(state+".away", state); err != nil {
			t.Fatal(err)
		}
		if r.Status != http.StatusInternalServerError {
			t.Fatalf("%d %s, want 500", r.Status, r.Body)
		}
		if m := ctErrShape(t, "backend unwritable", r); strings.Contains(fmt.Sprint(m["message"]), s.Dir) {
			t.Fatalf("internal path in the answer: %s", r.Body)
		}
		t.Logf("answer: %s", r.Body)
		fltWaitGone(t, s, "lock/", 10*time.Second)
		nothingLeft(t, "")
		must(t, a.URL, "POST", "/api/v1/instance", `{"challengeId":"r","sourceId":"ro"}`, http.StatusOK)
		must(t, a.URL, "DELETE", "/api/v1/instance/r/ro", "", http.StatusOK)
	})

	t.Run("engine crash", func(t *testing.T) {
		// A pulumi that dies (SIGSEGV) in the middle of every `up`, after the
		// stack was made.
		dir := t.TempDir()
		wrapper := filepath.Join(dir, "pulumi")
		real := filepath.Join(testenv.Root(), ".bin", "pulumi")
		script := "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = up ] && { echo 'engine going down' >&2; kill -SEGV $$; }; done\nexec " + real + " \"$@\"\n"
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		p := fltStart(t, s, map[string]string{"TESTSERVER_EVENTS": "inline", "CHALLFN_PULUMI": wrapper})
		r := send(context.Background(), p.URL, "POST", "/api/v1/instance", `{"challengeId":"r","sourceId":"crash"}`)
		if r.Status != http.StatusInternalServerError {
			t.Fatalf("%d %s, want 500", r.Status, r.Body)
		}
		m := ctErrShape(t, "engine crash", r)
		t.Logf("answer: %d %v", r.Status, m["message"])
		must(t, p.URL, "GET", "/api/v1/instance/r/crash", "", http.StatusNotFound)
		fltWaitGone(t, s, "lock/", 10*time.Second)
		nothingLeft(t, "")
		// Another process with a working engine serves the same request.
		must(t, a.URL, "POST", "/api/v1/instance", `{"challengeId":"r","sourceId":"crash"}`, http.StatusOK)
		must(t, a.URL, "DELETE", "/api/v1/instance/r/crash", "", http.StatusOK)
		nothingLeft(t, "")
	})
}
