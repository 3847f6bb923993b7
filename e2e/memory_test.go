package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
)

// Bounded memory (issue 11): what a scenario prints and logs is streamed and capped on
// its way to the engine and from the engine to challfn, so that 200 MiB of it grows the
// function process by less than 50 MiB. The function is a real process
// (internal/testserver); its growth is its peak resident set (VmHWM) after the chatty
// deployment minus the same after a quiet one.

// memChattyBytes is what the chatty scenario prints.
const memChattyBytes = 200 << 20

// memPeak is a process' peak resident set so far (VmHWM).
func memPeak(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}

// memTreeSampler samples the summed resident set of a function's whole process tree.
type memTreeSampler struct {
	mu   sync.Mutex
	peak int64
	stop chan struct{}
	done chan struct{}
}

func memSampleTree(p *fltProc) *memTreeSampler {
	s := &memTreeSampler{stop: make(chan struct{}), done: make(chan struct{})}
	page := int64(os.Getpagesize())
	go func() {
		defer close(s.done)
		for {
			sum := memRSS(p.cmd.Process.Pid, page)
			for _, q := range fltTree(p.cmd.Process.Pid, p.owner) {
				sum += memRSS(q.pid, page)
			}
			s.mu.Lock()
			s.peak = max(s.peak, sum)
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return s
}

func memRSS(pid int, page int64) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n * page
}

func (s *memTreeSampler) Stop() int64 {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// memRun deploys one instance of challenge cid with additional and returns the answer,
// the function process' peak resident set afterwards, and the tree's peak meanwhile.
func memRun(t testing.TB, p *fltProc, cid, source, additional string) (reply, int64, int64) {
	t.Helper()
	s := memSampleTree(p)
	r := send(context.Background(), p.URL, "POST", "/api/v1/instance", `{"challengeId":"`+cid+`","sourceId":"`+source+`","additional":`+additional+`}`)
	tree := s.Stop()
	return r, memPeak(p.cmd.Process.Pid), tree
}

func TestChattyScenarioMemory(t *testing.T) {
	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	ref := fltPush(t, s, "attacker")
	p := fltStart(t, s, map[string]string{"TESTSERVER_EVENTS": "inline", "DEPLOY_TIMEOUT": "300s", "CHALLFN_DEBUG": "true"})
	must(t, p.URL, "POST", "/api/v1/challenge", `{"id":"mem","scenario":"`+ref+`"}`, http.StatusOK)
	// Warm: the first deployment of a process makes its caches and pools.
	if r, _, _ := memRun(t, p, "mem", "warm", `{}`); r.Status != http.StatusOK {
		t.Fatalf("quiet deployment: %d %v %s", r.Status, r.Err, r.Body)
	}
	r, quiet, quietTree := memRun(t, p, "mem", "quiet", `{}`)
	if r.Status != http.StatusOK {
		t.Fatalf("quiet deployment: %d %v %s", r.Status, r.Err, r.Body)
	}
	t.Logf("FIGURES quiet deployment: function peak %.1f MiB, engine tree peak %.0f MiB", mib(quiet), mib(quietTree))
	const bound = 50 << 20
	for _, tc := range []struct {
		via    string
		status int
		want   string
	}{
		// Printed output is cut at the language host: the deployment goes on.
		{"stdout", http.StatusOK, ""},
		{"stderr", http.StatusOK, ""},
		// Logs sent to the engine are cut at the language host's proxy (past 16 MiB they
		// are dropped): the deployment goes on too.
		{"log", http.StatusOK, ""},
	} {
		t.Run(tc.via, func(t *testing.T) {
			add := fmt.Sprintf(`{"mode":"chatty","via":%q,"bytes":"%d"}`, tc.via, memChattyBytes)
			r, peak, tree := memRun(t, p, "mem", "chatty-"+tc.via, add)
			if r.Err != nil || r.Status != tc.status || !strings.Contains(string(r.Body), tc.want) {
				t.Fatalf("200 MiB to %s: %d %v %s", tc.via, r.Status, r.Err, r.Body)
			}
			// Since the quiet deployment, this run's included (the peak only grows).
			grown := peak - quiet
			t.Logf("FIGURES 200 MiB of scenario output to %s: function peak %.1f MiB (+%.1f MiB over the quiet deployment's), engine tree peak %.0f MiB (quiet %.0f MiB)",
				tc.via, mib(peak), mib(grown), mib(tree), mib(quietTree))
			if grown >= bound {
				t.Errorf("the function's memory grew by %.1f MiB, want < 50 MiB", mib(grown))
			}
		})
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// BenchmarkChattyScenarioRSS: peak resident sets, of the function process and of its
// whole tree (engine, plugins, program), for a quiet deployment and for 200 MiB of
// scenario output to stdout and to the engine's log, with the jail (auto) and without
// (off: the logs are not cut before the engine). Not asserted:
//
//	go test ./e2e -run '^$' -bench ChattyScenarioRSS -benchtime=1x
func BenchmarkChattyScenarioRSS(b *testing.B) {
	srv := etcdtest.Server(b)
	s := fltSetup(b, srv.Endpoints())
	ref := fltPush(b, s, "attacker")
	for _, mode := range []string{"auto", "off"} {
		p := fltStart(b, s, map[string]string{"TESTSERVER_EVENTS": "inline", "DEPLOY_TIMEOUT": "300s", "SCENARIO_SANDBOX": mode})
		cid := "rss-" + mode
		must(b, p.URL, "POST", "/api/v1/challenge", `{"id":"`+cid+`","scenario":"`+ref+`"}`, http.StatusOK)
		memRun(b, p, cid, "warm", `{}`)
		for _, run := range []struct{ name, additional string }{
			{"quiet", `{}`},
			{"stdout", fmt.Sprintf(`{"mode":"chatty","via":"stdout","bytes":"%d"}`, memChattyBytes)},
			{"log", fmt.Sprintf(`{"mode":"chatty","via":"log","bytes":"%d"}`, memChattyBytes)},
		} {
			b.Run(mode+"/"+run.name, func(b *testing.B) {
				var fn, tree int64
				for i := 0; i < b.N; i++ {
					start := memPeak(p.cmd.Process.Pid)
					r, peak, t := memRun(b, p, cid, fmt.Sprintf("%s-%d-%d", run.name, i, time.Now().UnixNano()), run.additional)
					if r.Err != nil {
						b.Fatal(r.Err)
					}
					fn, tree = max(fn, peak-start), max(tree, t)
				}
				b.ReportMetric(mib(memPeak(p.cmd.Process.Pid)), "fn-peak-MiB")
				b.ReportMetric(mib(fn), "fn-growth-MiB")
				b.ReportMetric(mib(tree), "tree-peak-MiB")
			})
		}
	}
}
