package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/etcd/etcdtest"
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
		r := fltDo(ctx, base, method, path, body)
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
// record once the janitor ran (the killed engines leave their stacks locked:
// shared/iac breaks locks older than DEPLOY_TIMEOUT + 10 s), the retried
// request succeeds, and the instances count matches the stacks.
func TestFaultKill(t *testing.T) {
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	ref := fltPush(t, s, "additional")
	inline := map[string]string{"TESTSERVER_EVENTS": "inline"}
	b := fltStart(t, s, inline)
	fltMust(t, b.URL, "POST", "/api/v1/challenge", `{"id":"k","scenario":"`+ref+`","timeout":"600s"}`, http.StatusOK)

	t.Run("during up", func(t *testing.T) {
		var locks, recov []time.Duration
		for run := range fltRuns {
			a := fltStart(t, s, inline)
			body := fmt.Sprintf(`{"challengeId":"k","sourceId":"up-%d","additional":{"sleep":"3s"}}`, run)
			res := make(chan fltResp, 1)
			go func() { res <- fltDo(context.Background(), a.URL, "POST", "/api/v1/instance", body) }()
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
			fltRuns, fltMedian(locks), fltMedian(recov), repair, runs)
	})

	t.Run("during destroy (instance writer lock)", func(t *testing.T) {
		// The three deletions are killed together: each then waits for the
		// engine lock of its dead destroy to become stale.
		procs := make([]*fltProc, fltRuns)
		res := make([]chan fltResp, fltRuns)
		for run := range fltRuns {
			fltMust(t, b.URL, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"k","sourceId":"del-%d"}`, run), http.StatusOK)
			procs[run] = fltStart(t, s, inline)
		}
		before := fltPulumiLocks(s)
		for run, a := range procs {
			res[run] = make(chan fltResp, 1)
			go func() {
				res[run] <- fltDo(context.Background(), a.URL, "DELETE", fmt.Sprintf("/api/v1/instance/k/del-%d", run), "")
			}()
		}
		fltWaitKeys(t, s, "lock/i/k/", fltRuns, 30*time.Second)
		fltWaitPulumiLock(t, s, before, fltRuns, 30*time.Second)
		killed := time.Now()
		for _, a := range procs {
			a.Kill()
		}
		for run := range fltRuns {
			if r := <-res[run]; r.Err == nil {
				t.Logf("run %d: answered before the kill: %d %s", run, r.Status, r.Body)
			}
		}
		fltWaitGone(t, s, "lock/", 10*time.Second)
		lockFree := time.Since(killed)
		var recov []time.Duration
		failed := 0
		for run := range fltRuns {
			path := fmt.Sprintf("/api/v1/instance/k/del-%d", run)
			d, others := fltRetry(t, b.URL, "DELETE", path, "", http.StatusOK, killed, 60*time.Second)
			if r := fltDo(context.Background(), b.URL, "GET", path, ""); r.Status != http.StatusNotFound {
				t.Fatalf("run %d: deleted instance still served: %d %s", run, r.Status, r.Body)
			}
			failed += len(others)
			recov = append(recov, d)
			t.Logf("run %d: retried DELETE succeeded %s after the kill; answers before: %d (%s)", run, d, len(others), fltFirst(others))
		}
		fltRepair(t, s, b, 60*time.Second)
		fltAccounted(t, s)
		t.Logf("FIGURES kill during destroy: locks free %s, retried DELETE succeeds after median %s (DEPLOY_TIMEOUT 8s + 10s: the dead engine's lock), %d retries answered 500 meanwhile",
			lockFree, fltMedian(recov), failed)
	})

	t.Run("holding the challenge writer lock", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			id := fmt.Sprintf("cw-%d", run)
			a := fltStart(t, s, inline)
			body := `{"id":"` + id + `","scenario":"` + ref + `","timeout":"600s"}`
			go fltDo(context.Background(), a.URL, "POST", "/api/v1/challenge", body)
			fltWaitKey(t, s, "lock/c/"+id+"/w/", 30*time.Second)
			killed := time.Now()
			a.Kill()
			if r := fltDo(context.Background(), b.URL, "GET", "/api/v1/challenge/"+id, ""); r.Status != http.StatusNotFound {
				t.Fatalf("half-registered challenge served: %d %s", r.Status, r.Body)
			}
			d, others := fltRetry(t, b.URL, "POST", "/api/v1/challenge", body, http.StatusOK, killed, 60*time.Second)
			recov = append(recov, d)
			t.Logf("run %d: retried create succeeded %s after the kill; other answers: %v", run, d, others)
			fltMust(t, b.URL, "DELETE", "/api/v1/challenge/"+id, "", http.StatusOK)
		}
		fltRepair(t, s, b, 60*time.Second) // preview stacks of killed registrations
		fltAccounted(t, s)
		t.Logf("FIGURES kill holding the challenge writer lock: retried create succeeds after median %s", fltMedian(recov))
	})

	t.Run("holding the pool lock", func(t *testing.T) {
		// The fill event of a min=1 challenge is killed mid-deployment; the
		// surviving process's janitor refills once the lock expired.
		var recov []time.Duration
		for run := range fltRuns {
			id := fmt.Sprintf("pl-%d", run)
			a := fltStart(t, s, nil) // events through its own broker
			before := fltPulumiLocks(s)
			fltMust(t, a.URL, "POST", "/api/v1/challenge", `{"id":"`+id+`","scenario":"`+ref+`","timeout":"600s","min":1,"max":2}`, http.StatusOK)
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
			fltMust(t, b.URL, "DELETE", fmt.Sprintf("/api/v1/challenge/pl-%d", run), "", http.StatusOK)
		}
		t.Logf("FIGURES kill holding the pool lock: pool refilled after median %s", fltMedian(recov))
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
		t.Logf("FIGURES kill holding the janitor lock: repaired after median %s", fltMedian(recov))
	})

	t.Run("between the etcd write and the response", func(t *testing.T) {
		var recov []time.Duration
		for run := range fltRuns {
			a := fltStart(t, s, map[string]string{"TESTSERVER_EVENTS": "inline", "TESTSERVER_HOLD": "5s"})
			sid := fmt.Sprintf("w-%d", run)
			body := `{"challengeId":"k","sourceId":"` + sid + `"}`
			res := make(chan fltResp, 1)
			go func() { res <- fltDo(context.Background(), a.URL, "POST", "/api/v1/instance", body) }()
			fltWaitKey(t, s, "src/"+sid+"/k", 60*time.Second)
			killed := time.Now()
			a.Kill()
			if r := <-res; r.Err == nil {
				t.Fatalf("run %d: the killed process answered %d %s", run, r.Status, r.Body)
			}
			// The retried create finds the instance (409, as for any second
			// create); the player's instance is there, nothing was lost.
			fltMust(t, b.URL, "POST", "/api/v1/instance", body, http.StatusConflict)
			d, _ := fltRetry(t, b.URL, "GET", "/api/v1/instance/k/"+sid, "", http.StatusOK, killed, 10*time.Second)
			recov = append(recov, d)
		}
		fltWaitGone(t, s, "lock/", 10*time.Second)
		fltAccounted(t, s)
		t.Logf("FIGURES kill between the etcd write and the response: instance served by another process after median %s, data lost 0", fltMedian(recov))
	})
}

func fltFirst(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}
