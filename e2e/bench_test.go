package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/store"
)

// Figures of issue 3, over loopback HTTP against the embedded etcd, through
// the real handlers. Nothing here is asserted; run with
//
//	go test ./e2e -run '^$' -bench 'Contract' -benchtime=2s
//	go test ./e2e -run '^$' -bench 'ConcurrentCreates' -benchtime=1x

// ctLatencies records request latencies and reports percentiles.
type ctLatencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *ctLatencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// percentile p (0–100) by the nearest-rank method.
func (l *ctLatencies) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (l *ctLatencies) report(b *testing.B) {
	b.ReportMetric(float64(l.percentile(50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(l.percentile(99).Microseconds())/1000, "p99-ms")
}

const (
	ctBenchChallenges = 100
	ctBenchPerChall   = 10
)

// ctBenchFixture registers one challenge through the API (so its scenario
// is resolved and compiled), then writes 99 more challenge records and 10
// claimed instances per challenge directly through the store (Reserve +
// CommitInstance, exactly what a create commits after its deployment): 1000
// instance records without deploying 1000 stacks. Sources src0..src9 have
// one instance in every challenge (100 each).
func ctBenchFixture(b *testing.B) *testenv.Env {
	env := testenv.Start(b, testenv.Options{})
	ref := env.Scenario(b, "outputs")
	if r := ctDo(b, env.URL, "POST", "/api/v1/challenge", `{"id":"c000","scenario":"`+ref+`","timeout":"3600s"}`); r.Status != 200 {
		b.Fatalf("challenge: %d %s", r.Status, r.Body)
	}
	ctx := context.Background()
	st := env.App.Store
	proto, err := st.GetChallenge(ctx, "c000")
	if err != nil {
		b.Fatal(err)
	}
	lease, err := env.Client.Grant(ctx, 600)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UTC()
	for c := range ctBenchChallenges {
		cid := fmt.Sprintf("c%03d", c)
		if c > 0 {
			ch := *proto
			ch.ID, ch.Rev = cid, 0
			if err := st.CreateChallenge(ctx, &ch); err != nil {
				b.Fatal(err)
			}
		}
		for s := range ctBenchPerChall {
			id := identity.New()
			sid := fmt.Sprintf("src%d", s)
			if err := st.Reserve(ctx, cid, sid, id, lease.ID); err != nil {
				b.Fatal(err)
			}
			in := &store.Instance{
				ChallengeID: cid, Identity: id, SourceID: sid,
				Since: now, LastRenew: now,
				ConnectionInfo: "nc " + id + ".outputs.local 1337",
				Flags:          []string{"CTF{" + id + "}", "CTF{second-" + id + "}"},
				Digest:         proto.Digest, Project: proto.Project,
			}
			if err := st.CommitInstance(ctx, in); err != nil {
				b.Fatal(err)
			}
		}
	}
	return env
}

// BenchmarkContractReads: retrieve and query latencies with 100 challenges
// × 10 instances (target: retrieve p50 ≤ 3 ms, query of 1000 instances
// ≤ 50 ms), and the lock chain (target ≤ 3 etcd round trips).
func BenchmarkContractReads(b *testing.B) {
	env := ctBenchFixture(b)
	get := func(b *testing.B, lat *ctLatencies, path string, check func([]byte)) {
		start := time.Now()
		r := ctDo(b, env.URL, "GET", path, "")
		lat.add(time.Since(start))
		if r.Status != 200 {
			b.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		if check != nil {
			check(r.Body)
		}
	}
	b.Run("retrieve-instance", func(b *testing.B) {
		var lat ctLatencies
		i := 0
		for b.Loop() {
			get(b, &lat, fmt.Sprintf("/api/v1/instance/c%03d/src%d", i%ctBenchChallenges, i%ctBenchPerChall), nil)
			i++
		}
		lat.report(b)
	})
	b.Run("retrieve-challenge-10", func(b *testing.B) {
		var lat ctLatencies
		i := 0
		for b.Loop() {
			get(b, &lat, fmt.Sprintf("/api/v1/challenge/c%03d", i%ctBenchChallenges), nil)
			i++
		}
		lat.report(b)
	})
	b.Run("query-instance-100", func(b *testing.B) {
		var lat ctLatencies
		i := 0
		for b.Loop() {
			get(b, &lat, fmt.Sprintf("/api/v1/instance?sourceId=src%d", i%ctBenchPerChall), func(body []byte) {
				if i == 0 && len(ctResults(b, body)) != ctBenchChallenges {
					b.Fatalf("query returned %d instances", len(ctResults(b, body)))
				}
			})
			i++
		}
		lat.report(b)
	})
	b.Run("query-challenge-1000", func(b *testing.B) {
		var lat ctLatencies
		first := true
		for b.Loop() {
			get(b, &lat, "/api/v1/challenge", func(body []byte) {
				if !first {
					return
				}
				first = false
				n := 0
				for _, c := range ctLines(b, body) {
					n += len(c["result"].(map[string]any)["instances"].([]any))
				}
				if n != ctBenchChallenges*ctBenchPerChall {
					b.Fatalf("query returned %d instances", n)
				}
			})
		}
		lat.report(b)
	})
	// The lock chains the handlers take, with the handlers' prefix and TTL,
	// from a client that counts its etcd round trips.
	var n etcd.Counter
	cli, err := etcd.Connect(context.Background(), etcd.Config{Endpoints: env.Etcd.Endpoints(), DialOptions: []grpc.DialOption{n.DialOption()}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	locks := lock.New(cli, lock.Options{Prefix: env.App.Config.EtcdPrefix, TTL: env.App.Config.LockTTL})
	for _, c := range []struct {
		name  string
		chain lock.Chain
	}{
		{"lock-create-instance", lock.Chain{Challenge: "c001", ChallengeMode: lock.Read}},
		{"lock-update-challenge", lock.Chain{Challenge: "c001", ChallengeMode: lock.Write}},
		{"lock-renew-instance", lock.Chain{Challenge: "c001", ChallengeMode: lock.Read, Instance: "0123456789abcdef", InstanceMode: lock.Write}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var lat ctLatencies
			ctx := context.Background()
			before := n.Unary()
			chains := 0
			for b.Loop() {
				start := time.Now()
				h, err := locks.Acquire(ctx, c.chain)
				if err != nil {
					b.Fatal(err)
				}
				if err := h.Release(ctx); err != nil {
					b.Fatal(err)
				}
				lat.add(time.Since(start))
				chains++
			}
			b.ReportMetric(float64(lat.percentile(50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(n.Unary()-before)/float64(chains), "RT/chain")
		})
	}
}

// BenchmarkConcurrentCreates: 50 distinct sources create their instance of
// one challenge (outputs scenario) at once; each is a real Pulumi deployment.
// Reports throughput and per-request latency percentiles.
func BenchmarkConcurrentCreates(b *testing.B) {
	const sources = 50
	env := testenv.Start(b, testenv.Options{})
	ref := env.Scenario(b, "outputs")
	if r := ctDo(b, env.URL, "POST", "/api/v1/challenge", `{"id":"many","scenario":"`+ref+`","timeout":"3600s"}`); r.Status != 200 {
		b.Fatalf("challenge: %d %s", r.Status, r.Body)
	}
	var lat ctLatencies
	var total time.Duration
	round := 0
	for b.Loop() {
		start := time.Now()
		var wg sync.WaitGroup
		for s := range sources {
			wg.Go(func() {
				t0 := time.Now()
				r := ctDo(b, env.URL, "POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":"many","sourceId":"r%d-s%d"}`, round, s))
				lat.add(time.Since(t0))
				if r.Status != 200 {
					b.Errorf("create %d: %d %s", s, r.Status, r.Body)
				}
			})
		}
		wg.Wait()
		total += time.Since(start)
		round++
	}
	b.ReportMetric(float64(sources*round)/total.Seconds(), "creates/s")
	b.ReportMetric(lat.percentile(50).Seconds(), "p50-s")
	b.ReportMetric(lat.percentile(99).Seconds(), "p99-s")
}
