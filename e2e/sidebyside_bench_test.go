package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

// BenchmarkSideBySide is issue 13's comparison, run by
// scripts/bench-vs-chall-manager.sh: chall-manager v0.6.6's own server (its
// in-process locks, a file:// backend) and challfn's local topology (etcd,
// broker, file:// backend), on loopback, with the same scenario, registry,
// Pulumi CLI and language host, driven over the same REST contract. Every
// operation is measured on both, interleaved (A B, then B A for the next
// sample), so both see the same machine load. Nothing is asserted: it
// prints a table of p50, p99 and the ratio challfn / chall-manager.
//
// SIDE_BY_SIDE_N sets how many samples the repeated calls take (default
// 50); the deployments are fixed (5 fresh creates, 10 claims, batches of
// 10 and 50 concurrent creates, a pool of 60, a challenge of 20 instances).
func BenchmarkSideBySide(b *testing.B) {
	n := 50
	if v, err := strconv.Atoi(os.Getenv("SIDE_BY_SIDE_N")); err == nil && v > 0 {
		n = v
	}
	env := testenv.Start(b, testenv.Options{})
	ref := env.Scenario(b, "outputs")
	up := upStartServer(b, testenv.ChallManager(b, "chall-manager"))
	targets := []*sbsTarget{
		{name: "challfn", url: env.URL, idle: func() { env.Wait() }},
		{name: "chall-manager", url: "http://" + up.Target, idle: func() { upIdle(b, up) }},
	}
	load := []string{sbsLoad()}
	table := sbsTable{b: b}

	// Untimed: each compiles the scenario once per digest.
	for _, tg := range targets {
		tg.must(b, "POST", "/api/v1/challenge", `{"id":"warm","scenario":"`+ref+`","timeout":"3600s"}`)
	}

	b.ResetTimer()
	for range b.N {
		table.each(targets, "challenge registration", 5, func(tg *sbsTarget, i int) {
			tg.must(b, "POST", "/api/v1/challenge", fmt.Sprintf(`{"id":"reg%d","scenario":"%s","timeout":"3600s"}`, i, ref))
		})
		table.each(targets, "fresh create", 5, func(tg *sbsTarget, i int) {
			tg.must(b, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"warm","sourceId":"f%d"}`, i))
		})
		table.each(targets, "renew (PATCH instance)", n, func(tg *sbsTarget, i int) {
			tg.must(b, "PATCH", "/api/v1/instance/warm/f0", `{}`)
		})
		table.each(targets, "retrieve (GET instance)", n, func(tg *sbsTarget, i int) {
			tg.must(b, "GET", "/api/v1/instance/warm/f0", "")
		})
		table.each(targets, "query (GET instance?sourceId)", n, func(tg *sbsTarget, i int) {
			tg.must(b, "GET", "/api/v1/instance?sourceId=f0", "")
		})
		// What bounds the calls above, timed in the same interleaving: an
		// HTTP exchange that reaches no business code on both; then
		// challfn's etcd transaction alone (its store, in this process like
		// its server) against chall-manager's whole call: the ratio a
		// challfn with no cost but etcd's would reach.
		table.each(targets, "HTTP exchange alone (unknown route)", n, func(tg *sbsTarget, i int) {
			if r := send(context.Background(), tg.url, "GET", "/api/v1/nope/nope/nope", ""); r.Err != nil || r.Status >= 500 {
				b.Errorf("%s: unknown route: %d %v", tg.name, r.Status, r.Err)
			}
		})
		table.each(targets, "floor: challfn's etcd read alone vs chall-manager's retrieve", n, func(tg *sbsTarget, i int) {
			if tg.name == "challfn" {
				if _, _, err := env.App.Store.InstanceWithChallenge(context.Background(), "warm", "f0"); err != nil {
					b.Error(err)
				}
				return
			}
			tg.must(b, "GET", "/api/v1/instance/warm/f0", "")
		})
		c, in, err := env.App.Store.InstanceWithChallenge(context.Background(), "warm", "f0")
		if err != nil {
			b.Fatal(err)
		}
		table.each(targets, "floor: challfn's etcd write alone vs chall-manager's renew", n, func(tg *sbsTarget, i int) {
			if tg.name == "challfn" {
				if in, err = env.App.Store.RenewInstance(context.Background(), c, in, time.Now().UTC()); err != nil {
					b.Error(err)
				}
				return
			}
			tg.must(b, "PATCH", "/api/v1/instance/warm/f0", `{}`)
		})

		// A pool of 60 (max 60: no refill runs during the claims).
		table.each(targets, "pool fill, 60 (wall)", 1, func(tg *sbsTarget, _ int) {
			tg.must(b, "POST", "/api/v1/challenge", `{"id":"pool","scenario":"`+ref+`","timeout":"3600s","min":60,"max":60}`)
			tg.idle()
		})
		table.each(targets, "pool claim", 10, func(tg *sbsTarget, i int) {
			tg.must(b, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"pool","sourceId":"p%d"}`, i))
		})
		table.batch(targets, "pool claim, 50 concurrent", 50, func(tg *sbsTarget, i int) {
			tg.must(b, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"pool","sourceId":"q%d"}`, i))
		})

		table.batch(targets, "create, 10 concurrent", 10, func(tg *sbsTarget, i int) {
			tg.must(b, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"reg0","sourceId":"c%d"}`, i))
		})
		table.batch(targets, "create, 50 concurrent", 50, func(tg *sbsTarget, i int) {
			tg.must(b, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"reg1","sourceId":"d%d"}`, i))
		})
		table.batch(targets, "renew, 50 concurrent", 50, func(tg *sbsTarget, i int) {
			tg.must(b, "PATCH", fmt.Sprintf("/api/v1/instance/reg1/d%d", i), `{}`)
		})
		// The 50 sources that claimed at once, each renewing: every claim
		// acknowledged must have given the source an instance.
		lost := map[string]*atomic.Int64{}
		for _, tg := range targets {
			lost[tg.name] = new(atomic.Int64)
		}
		table.batch(targets, "claimed renew, 50 concurrent", 50, func(tg *sbsTarget, i int) {
			if r := send(context.Background(), tg.url, "PATCH", fmt.Sprintf("/api/v1/instance/pool/q%d", i), `{}`); r.Status == http.StatusNotFound {
				lost[tg.name].Add(1)
			} else if r.Status != 200 {
				b.Errorf("%s: renew of q%d: %d %s %v", tg.name, i, r.Status, r.Body, r.Err)
			}
		})
		for _, tg := range targets {
			table.notes = append(table.notes, fmt.Sprintf("%s: %d of the 50 sources whose concurrent claim answered 200 have no instance (renew 404)", tg.name, lost[tg.name].Load()))
		}

		table.each(targets, "delete instance", 5, func(tg *sbsTarget, i int) {
			tg.must(b, "DELETE", fmt.Sprintf("/api/v1/instance/warm/f%d", i), "")
		})
		// 20 instances: the 10 of the batch above and 10 more.
		for _, tg := range targets {
			var wg sync.WaitGroup
			for i := 10; i < 20; i++ {
				wg.Go(func() {
					tg.must(b, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"reg0","sourceId":"c%d"}`, i))
				})
			}
			wg.Wait()
			if b.Failed() {
				b.FailNow()
			}
			tg.idle()
		}
		table.each(targets, "delete challenge, 20 instances", 1, func(tg *sbsTarget, _ int) {
			tg.must(b, "DELETE", "/api/v1/challenge/reg0", "")
			tg.idle()
		})
	}
	b.StopTimer()
	load = append(load, sbsLoad())
	// To stdout, not b.Log: the testing package truncates long benchmark logs.
	fmt.Printf("side by side, load average %s → %s\n%s\n", load[0], load[1], table.String())
}

// sbsTarget is one system under test.
type sbsTarget struct {
	name string
	url  string
	idle func() // waits until no deployment is running
}

// must makes a call that must answer 200. It may run in any goroutine: a
// failure is an Errorf, and the table stops the benchmark after the step.
func (tg *sbsTarget) must(b *testing.B, method, path, body string) {
	if r := send(context.Background(), tg.url, method, path, body); r.Err != nil || r.Status != 200 {
		b.Errorf("%s: %s %s: %d %s %v", tg.name, method, path, r.Status, r.Body, r.Err)
	}
}

// sbsTable holds the samples of each operation, by target.
type sbsTable struct {
	b     *testing.B
	notes []string
	ops   []string
	got   map[string]map[string][]time.Duration // op → target → samples
}

func (t *sbsTable) add(op, target string, d time.Duration) {
	if t.got == nil {
		t.got = map[string]map[string][]time.Duration{}
	}
	if t.got[op] == nil {
		t.got[op] = map[string][]time.Duration{}
		t.ops = append(t.ops, op)
	}
	t.got[op][target] = append(t.got[op][target], d)
}

// settle waits until no target runs a deployment: an operation is timed on
// a machine that the previous one's engines have left.
func (t *sbsTable) settle(targets []*sbsTarget) {
	for _, tg := range targets {
		tg.idle()
	}
}

// each times call k times on every target, alternating which goes first.
func (t *sbsTable) each(targets []*sbsTarget, op string, k int, call func(*sbsTarget, int)) {
	t.settle(targets)
	for i := range k {
		for j := range targets {
			tg := targets[(i+j)%len(targets)]
			start := time.Now()
			call(tg, i)
			t.add(op, tg.name, time.Since(start))
			if t.b.Failed() {
				t.b.FailNow()
			}
		}
	}
}

// batch starts k calls at once on one target, then on the next, and
// records each call's latency and the batch's wall time.
func (t *sbsTable) batch(targets []*sbsTarget, op string, k int, call func(*sbsTarget, int)) {
	t.settle(targets)
	for _, tg := range targets {
		var wg sync.WaitGroup
		var mu sync.Mutex
		start := time.Now()
		for i := range k {
			wg.Go(func() {
				s := time.Now()
				call(tg, i)
				d := time.Since(s)
				mu.Lock()
				t.add(op+" (each)", tg.name, d)
				mu.Unlock()
			})
		}
		wg.Wait()
		t.add(op+" (wall)", tg.name, time.Since(start))
		if t.b.Failed() {
			t.b.FailNow()
		}
		tg.idle()
	}
}

func (t *sbsTable) String() string {
	var s strings.Builder
	fmt.Fprintf(&s, "| operation | n | challfn p50 | challfn p99 | chall-manager p50 | chall-manager p99 | ratio p50 | ratio p99 |\n|---|---|---|---|---|---|---|---|\n")
	for _, op := range t.ops {
		a, c := t.got[op]["challfn"], t.got[op]["chall-manager"]
		ap50, ap99, cp50, cp99 := quantile(a, 0.5), quantile(a, 0.99), quantile(c, 0.5), quantile(c, 0.99)
		fmt.Fprintf(&s, "| %s | %d | %s | %s | %s | %s | %.2f | %.2f |\n", op, len(a),
			sbsMS(ap50), sbsMS(ap99), sbsMS(cp50), sbsMS(cp99), ratio(ap50, cp50), ratio(ap99, cp99))
	}
	for _, n := range t.notes {
		fmt.Fprintf(&s, "\n%s", n)
	}
	return s.String()
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func sbsMS(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", ms(d))
	}
	return fmt.Sprintf("%.0f ms", ms(d))
}

func sbsLoad() string {
	raw, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// upIdle waits until chall-manager runs no engine process (its process
// group holds no other process than itself) and its pool goroutines are
// done: chall-manager fills pools in goroutines the request does not wait
// for.
func upIdle(b *testing.B, up upServer) {
	deadline := time.Now().Add(15 * time.Minute)
	quiet := 0
	for quiet < 5 { // 5 looks in a row, 100 ms apart: no gap between two deployments
		if time.Now().After(deadline) {
			b.Fatalf("chall-manager still busy after 15 minutes")
		}
		if upGroupSize(up.Pid) <= 1 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// upGroupSize counts the processes of process group pgid.
func upGroupSize(pgid int) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	n := 0
	for _, p := range stats {
		raw, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces; cut after ')'.
		s := string(raw)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			n++
		}
	}
	return n
}
