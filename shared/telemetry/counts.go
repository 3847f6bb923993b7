package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/metric"
)

// ChallengeCounts are the registered instances of one challenge.
type ChallengeCounts struct {
	ChallengeID string
	Claimed     int64 // instances owned by a source (instances{pool="false"})
	Pooled      int64 // instances waiting in the pool (instances{pool="true"}, challfn.pool.size)
	PoolMin     int64 // configured pool minimum
	PoolMax     int64 // configured maximum of instances, 0 = unbounded
}

// Counts is the registered state, read from the store.
type Counts struct {
	Challenges   int64
	PerChallenge []ChallengeCounts
}

// Counter reads the registered counts from the store (etcd). It is called at
// metric collection time, at most once per CountsOptions.MinInterval.
type Counter interface {
	Counts(ctx context.Context) (Counts, error)
}

// CounterFunc adapts a function to Counter.
type CounterFunc func(ctx context.Context) (Counts, error)

// Counts implements Counter.
func (f CounterFunc) Counts(ctx context.Context) (Counts, error) { return f(ctx) }

// CountsOptions tune ObserveCounts.
type CountsOptions struct {
	// MinInterval is the age under which the last read is reused: every Flush
	// collects metrics, and a read per request would be wasted load on etcd.
	// Default 15s.
	MinInterval time.Duration
	// Timeout bounds one read. Default 1s.
	Timeout time.Duration
}

// ObserveCounts registers the store-backed gauges: challenges, instances
// {challenge, pool}, challfn.pool.{size,min,max}{challenge} and
// challfn.store.up. They are observed at collection time from c, so they are
// right after any restart and in every instance that registers them.
//
// Choice (docs/design.md, decision 8): gauges read from the store at collection time,
// not up/down counters updated after each mutation — a counter starts at zero
// in each new function instance and would be wrong after any restart. Every
// function instance that registers the observer reports the same store-wide
// value under its own service.instance.id, so dashboards aggregate with max by
// (challenge, pool). The janitor always registers it (it runs on a schedule,
// so the values stay fresh even when no requests come in).
//
// When a read fails nothing but challfn.store.up=0 is reported: stale counts
// are worse than a gap. Calling ObserveCounts again replaces the previous
// observer. The returned function unregisters it. On a disabled Telemetry the
// callback is never called, so the store is never read.
func (in *Instruments) ObserveCounts(c Counter, o CountsOptions) (unregister func() error, err error) {
	if c == nil {
		return nil, errors.New("telemetry: ObserveCounts: nil Counter")
	}
	if o.MinInterval <= 0 {
		o.MinInterval = 15 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Second
	}
	cache := &countsCache{counter: c, opts: o, log: in.log}
	reg, err := in.meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		counts, err := cache.get(ctx)
		if err != nil {
			obs.ObserveInt64(in.storeUp, 0)
			return nil // already logged; an error here would only be logged again by the SDK
		}
		obs.ObserveInt64(in.storeUp, 1)
		obs.ObserveInt64(in.challenges, counts.Challenges)
		for _, cc := range counts.PerChallenge {
			ch := AttrChallenge.String(cc.ChallengeID)
			obs.ObserveInt64(in.instances, cc.Claimed, metric.WithAttributes(ch, AttrPool.Bool(false)))
			obs.ObserveInt64(in.instances, cc.Pooled, metric.WithAttributes(ch, AttrPool.Bool(true)))
			one := metric.WithAttributes(ch)
			obs.ObserveInt64(in.poolSize, cc.Pooled, one)
			obs.ObserveInt64(in.poolMin, cc.PoolMin, one)
			obs.ObserveInt64(in.poolMax, cc.PoolMax, one)
		}
		return nil
	}, in.challenges, in.instances, in.poolSize, in.poolMin, in.poolMax, in.storeUp)
	if err != nil {
		return nil, err
	}
	h := &registration{reg: reg}
	in.mu.Lock()
	prev := in.reg
	in.reg = h
	in.mu.Unlock()
	if prev != nil {
		_ = prev.reg.Unregister()
	}
	return func() error {
		in.mu.Lock()
		if in.reg == h {
			in.reg = nil
		}
		in.mu.Unlock()
		return reg.Unregister()
	}, nil
}

// registration wraps a metric.Registration so that it can be compared.
type registration struct{ reg metric.Registration }

// countsCache reuses a recent successful read. Concurrent collections share
// one read (the mutex is held across it).
type countsCache struct {
	counter Counter
	opts    CountsOptions
	log     *slog.Logger

	mu     sync.Mutex
	counts Counts
	at     time.Time
}

func (cc *countsCache) get(ctx context.Context) (Counts, error) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if !cc.at.IsZero() && time.Since(cc.at) < cc.opts.MinInterval {
		return cc.counts, nil
	}
	rctx, cancel := context.WithTimeout(ctx, cc.opts.Timeout)
	defer cancel()
	counts, err := cc.counter.Counts(rctx)
	if err != nil {
		cc.at = time.Time{}
		cc.log.WarnContext(ctx, "telemetry: reading counts from the store failed", slog.String("error", err.Error()))
		return Counts{}, err
	}
	cc.counts, cc.at = counts, time.Now()
	return counts, nil
}
