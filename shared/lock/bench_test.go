package lock_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/etcd/etcdtest"
	"github.com/challfn/challfn/shared/lock"
)

// BenchmarkChain measures an uncontended acquire+release of a chain and
// reports the median latency and the etcd round trips per chain.
func BenchmarkChain(b *testing.B) {
	srv := etcdtest.Server(b)
	var n etcd.Counter
	cli := etcdtest.Client(b, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	l := lock.New(cli, lock.Options{Prefix: prefix})
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		chain lock.Chain
	}{
		{"challenge-write", lock.Chain{Challenge: "c", ChallengeMode: lock.Write}},
		{"instance-write", lock.Chain{Challenge: "c", Instance: "i", InstanceMode: lock.Write}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			durs := make([]time.Duration, 0, b.N)
			before := n.Unary()
			b.ResetTimer()
			for b.Loop() {
				start := time.Now()
				h, err := l.Acquire(ctx, tc.chain)
				if err != nil {
					b.Fatal(err)
				}
				if err := h.Release(ctx); err != nil {
					b.Fatal(err)
				}
				durs = append(durs, time.Since(start))
			}
			b.StopTimer()
			slices.Sort(durs)
			b.ReportMetric(float64(durs[len(durs)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(durs[len(durs)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(n.Unary()-before)/float64(len(durs)), "RT/chain")
		})
	}
}

// BenchmarkChainParallel runs instance chains from many goroutines: distinct
// instances of one challenge (no conflict), then one instance (all conflict).
func BenchmarkChainParallel(b *testing.B) {
	cli := etcdtest.Start(b)
	l := lock.New(cli, lock.Options{Prefix: prefix})
	ctx := context.Background()
	for _, shared := range []bool{false, true} {
		b.Run(fmt.Sprintf("same-instance=%v", shared), func(b *testing.B) {
			var id atomic.Int64
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				inst := fmt.Sprint(id.Add(1))
				if shared {
					inst = "x"
				}
				for pb.Next() {
					h, err := l.Acquire(ctx, lock.Chain{Challenge: "c", Instance: inst, InstanceMode: lock.Write})
					if err != nil {
						b.Error(err)
						return
					}
					_ = h.Release(ctx)
				}
			})
		})
	}
}
