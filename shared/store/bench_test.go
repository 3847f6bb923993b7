package store_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/store"
)

// seed creates nc challenges with ni claimed instances each (source sK for
// the K-th instance, so every source has one instance per challenge), using
// a few goroutines.
func seed(b *testing.B, s *store.Store, cli *clientv3.Client, nc, ni int, lastRenew func(c, i int) time.Time) {
	b.Helper()
	l := lease(b, cli)
	ctx := context.Background()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for c := range nc {
		cid := fmt.Sprintf("chall-%04d", c)
		must(b, s.CreateChallenge(ctx, &store.Challenge{ID: cid, Scenario: "reg/x:v1", Digest: "sha256:x", Timeout: ptr(time.Hour)}))
		for k := range ni {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				sid, id := fmt.Sprintf("s%d", k), fmt.Sprintf("%s-%04d", cid, k)
				if err := s.Reserve(ctx, cid, sid, id, l); err != nil {
					b.Error(err)
					return
				}
				i := &store.Instance{ChallengeID: cid, SourceID: sid, Identity: id, Since: t0, LastRenew: lastRenew(c, k),
					ConnectionInfo: "nc 10.0.0.1 1337", Flags: []string{"FLAG{0123456789abcdef}"}, Additional: map[string]string{"k": "v"}, Digest: "sha256:x", Project: "p"}
				if err := s.CommitInstance(ctx, i); err != nil {
					b.Error(err)
				}
			}()
		}
	}
	wg.Wait()
}

func sameRenew(int, int) time.Time { return t0 }

func countedStore(b *testing.B) (*store.Store, *clientv3.Client, *etcd.Counter) {
	srv := etcdtest.Server(b)
	n := &etcd.Counter{}
	cli := etcdtest.Client(b, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	return store.New(cli, prefix), cli, n
}

func reportRT(b *testing.B, n *etcd.Counter, before int64) {
	b.ReportMetric(float64(n.Unary()-before)/float64(b.N), "RT/op")
}

// BenchmarkQuery: 100 challenges × 10 claimed instances.
func BenchmarkQuery(b *testing.B) {
	s, cli, n := countedStore(b)
	seed(b, s, cli, 100, 10, sameRenew)
	ctx := context.Background()
	b.Run("get-by-source", func(b *testing.B) {
		before := n.Unary()
		for b.Loop() {
			if _, err := s.InstanceBySource(ctx, "chall-0042", "s7"); err != nil {
				b.Fatal(err)
			}
		}
		reportRT(b, n, before)
	})
	b.Run("snapshot-one-challenge", func(b *testing.B) {
		before := n.Unary()
		for b.Loop() {
			if snap, err := s.GetSnapshot(ctx, "chall-0042"); err != nil || len(snap.Claimed) != 10 {
				b.Fatal(err)
			}
		}
		reportRT(b, n, before)
	})
	b.Run("snapshot-all-100x10", func(b *testing.B) {
		before := n.Unary()
		for b.Loop() {
			if snaps, err := s.AllChallenges(ctx); err != nil || len(snaps) != 100 {
				b.Fatal(err)
			}
		}
		reportRT(b, n, before)
	})
	b.Run("list-by-source-100", func(b *testing.B) {
		before := n.Unary()
		for b.Loop() {
			if insts, _, err := s.SourceInstances(ctx, "s3"); err != nil || len(insts) != 100 {
				b.Fatal(err, len(insts))
			}
		}
		reportRT(b, n, before)
	})
	b.Run("count", func(b *testing.B) {
		before := n.Unary()
		for b.Loop() {
			if c, err := s.Count(ctx); err != nil || c.Instances != 1000 {
				b.Fatal(err)
			}
		}
		reportRT(b, n, before)
	})
}

// BenchmarkJanitorScan: the janitor's view of 10 000 claimed instances (every
// challenge with its instances, one revision), from which it finds the expired.
func BenchmarkJanitorScan(b *testing.B) {
	s, cli, n := countedStore(b)
	seed(b, s, cli, 100, 100, func(c, i int) time.Time {
		return t0.Add(time.Duration(c*100+i-5000) * time.Second)
	})
	ctx := context.Background()
	before := n.Unary()
	for b.Loop() {
		views, err := s.AllChallenges(ctx)
		if err != nil || len(views) != 100 || len(views[0].Claimed) != 100 {
			b.Fatal(err, len(views))
		}
	}
	reportRT(b, n, before)
}

// BenchmarkWrites: the write paths of the hot operations.
func BenchmarkWrites(b *testing.B) {
	s, cli, n := countedStore(b)
	ctx := context.Background()
	must(b, s.CreateChallenge(ctx, &store.Challenge{ID: "c", Scenario: "x"}))
	l := lease(b, cli)
	b.Run("reserve+commit", func(b *testing.B) {
		before := n.Unary()
		k := 0
		for b.Loop() {
			k++
			sid, id := fmt.Sprintf("r%d", k), fmt.Sprintf("rid%d", k)
			must(b, s.Reserve(ctx, "c", sid, id, l))
			must(b, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", SourceID: sid, Identity: id, LastRenew: t0}))
		}
		reportRT(b, n, before)
	})
	seq := 0 // unique names across the runs of the sub-benchmark
	b.Run("claim", func(b *testing.B) {
		for range b.N {
			seq++
			id := fmt.Sprintf("p%08d", seq)
			must(b, s.Reserve(ctx, "c", "", id, l))
			must(b, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", Identity: id}))
		}
		before := n.Unary()
		b.ResetTimer()
		for range b.N {
			seq++
			if _, err := s.ClaimPooled(ctx, "c", fmt.Sprintf("cl%d", seq), func(i *store.Instance) { i.LastRenew = t0 }); err != nil {
				b.Fatal(err)
			}
		}
		reportRT(b, n, before)
	})
	b.Run("renew", func(b *testing.B) {
		i, err := s.InstanceBySource(ctx, "c", "r1")
		must(b, err)
		before := n.Unary()
		for b.Loop() {
			_, err := s.ModifyInstance(ctx, "c", i.Identity, func(cur *store.Instance) error {
				cur.LastRenew = cur.LastRenew.Add(time.Second)
				return nil
			})
			must(b, err)
		}
		reportRT(b, n, before)
	})
	// What a renewal costs on the hot path (manager.RenewInstance
	// uncontended) when the function instance had not seen the records: the
	// read of the instance with its challenge, then one transaction.
	b.Run("renew-hot-unseen", func(b *testing.B) {
		before := n.Unary()
		for b.Loop() {
			c, i, err := s.InstanceWithChallenge(ctx, "c", "r1")
			must(b, err)
			_, err = s.RenewInstance(ctx, c, i, i.LastRenew.Add(time.Second))
			must(b, err)
		}
		reportRT(b, n, before)
	})
	// ... and when it had (its last renewal's answer): the transaction alone.
	b.Run("renew-hot-seen", func(b *testing.B) {
		c, i, err := s.InstanceWithChallenge(ctx, "c", "r1")
		must(b, err)
		before := n.Unary()
		for b.Loop() {
			i, err = s.RenewInstance(ctx, c, i, i.LastRenew.Add(time.Second))
			must(b, err)
		}
		reportRT(b, n, before)
	})
	// A claim that starts from the last one's view of the pool.
	b.Run("claim-hinted", func(b *testing.B) {
		for range b.N + 1 {
			seq++
			id := fmt.Sprintf("h%08d", seq)
			must(b, s.Reserve(ctx, "c", "", id, l))
			must(b, s.CommitInstance(ctx, &store.Instance{ChallengeID: "c", Identity: id}))
		}
		accept := func(*store.Challenge) error { return nil }
		seq++
		_, claim, err := s.ClaimWithChallenge(ctx, "c", fmt.Sprintf("ch%d", seq), nil, accept, nil)
		must(b, err)
		before := n.Unary()
		b.ResetTimer()
		for range b.N {
			seq++
			_, claim, err = s.ClaimWithChallenge(ctx, "c", fmt.Sprintf("ch%d", seq), claim.Next, accept, func(i *store.Instance) { i.LastRenew = t0 })
			must(b, err)
		}
		reportRT(b, n, before)
	})
}

// BenchmarkClaimBurst: 50 claims at once on a pool of 50, straight on the
// store (no HTTP): what etcd alone costs the burst that e2e's
// BenchmarkPoolClaim sends over HTTP. Reports the claims' p50/p99, the
// burst's wall time and round trips per claim.
func BenchmarkClaimBurst(b *testing.B) {
	const burst = 50
	s, cli, n := countedStore(b)
	ctx := context.Background()
	addChallenge(b, s, "c")
	accept := func(*store.Challenge) error { return nil }
	var lat, walls []time.Duration
	var rt int64
	for i := range b.N {
		b.StopTimer()
		for k := range burst {
			addPooled(b, s, cli, "c", fmt.Sprintf("p%04d-%02d", i, k))
		}
		before := n.Unary()
		ready := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		b.StartTimer()
		start := time.Now()
		for k := range burst {
			wg.Go(func() {
				<-ready
				t := time.Now()
				if _, _, err := s.ClaimWithChallenge(ctx, "c", fmt.Sprintf("s%04d-%02d", i, k), nil, accept, nil); err != nil {
					b.Error(err)
				}
				mu.Lock()
				lat = append(lat, time.Since(t))
				mu.Unlock()
			})
		}
		close(ready)
		wg.Wait()
		walls = append(walls, time.Since(start))
		rt += n.Unary() - before
	}
	slices.Sort(lat)
	slices.Sort(walls)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "claim-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "claim-p99-ms")
	b.ReportMetric(float64(walls[len(walls)/2].Microseconds())/1000, "wall-ms")
	b.ReportMetric(float64(rt)/float64(b.N*burst), "RT/claim")
}
