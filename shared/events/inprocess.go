package events

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// InProcess is the events driver of a single process (EVENTS_SINK_URL
// mem://): events are queued in memory and delivered in the background to the
// handler given to Bind, as a broker would deliver them: at least once,
// Workers at a time, transient failures retried with exponential backoff,
// permanent ones (4xx, events.Permanent) dropped. For the local run and the
// tests: on a serverless platform nothing may run after the response
// (docs/design.md, decision 4), so the functions deployed there send their
// events to a broker or Pub/Sub.
type InProcess struct {
	Workers  int           // default 8
	Attempts int           // default 6
	Backoff  time.Duration // first retry delay, doubled each time; default 200ms
	Log      *slog.Logger

	// deliver sends one event; its error is judged like a handler's
	// (Result): nil delivered, permanent dropped, anything else retried.
	deliver func(ctx context.Context, e cloudevents.Event) error

	once  sync.Once
	queue chan cloudevents.Event
	wg    sync.WaitGroup
	stop  context.CancelFunc

	mu        sync.Mutex
	inflight  int
	idle      *sync.Cond
	delivered int
	dropped   int
}

// Bind sets the handler events are delivered to (before the first Send).
func (p *InProcess) Bind(fn HandlerFunc) { p.deliver = fn }

func (p *InProcess) init() {
	p.once.Do(func() {
		if p.Workers <= 0 {
			p.Workers = 8
		}
		if p.Attempts <= 0 {
			p.Attempts = 6
		}
		if p.Backoff <= 0 {
			p.Backoff = 200 * time.Millisecond
		}
		if p.Log == nil {
			p.Log = slog.Default()
		}
		p.idle = sync.NewCond(&p.mu)
		p.queue = make(chan cloudevents.Event, 10000)
		ctx, cancel := context.WithCancel(context.Background())
		p.stop = cancel
		for range p.Workers {
			p.wg.Add(1)
			go p.work(ctx)
		}
	})
}

// Send queues e (a Sender); ErrQueueFull when 10 000 events wait already.
func (p *InProcess) Send(ctx context.Context, e cloudevents.Event) error {
	p.init()
	p.mu.Lock()
	p.inflight++
	p.mu.Unlock()
	select {
	case p.queue <- e:
		return nil
	case <-ctx.Done():
		p.done(false)
		return ctx.Err()
	default:
		p.done(false)
		return ErrQueueFull
	}
}

// Wait blocks until every queued event was delivered or dropped.
func (p *InProcess) Wait() {
	p.init()
	p.mu.Lock()
	for p.inflight > 0 {
		p.idle.Wait()
	}
	p.mu.Unlock()
}

// Stats returns how many events were delivered and dropped so far.
func (p *InProcess) Stats() (delivered, dropped int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.delivered, p.dropped
}

// Close stops delivering; events still queued are dropped.
func (p *InProcess) Close() {
	p.init()
	p.stop()
	p.wg.Wait()
}

func (p *InProcess) done(delivered bool) {
	p.mu.Lock()
	p.inflight--
	if delivered {
		p.delivered++
	} else {
		p.dropped++
	}
	if p.inflight == 0 {
		p.idle.Broadcast()
	}
	p.mu.Unlock()
}

func (p *InProcess) work(ctx context.Context) {
	defer p.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-p.queue:
			p.done(p.attempt(ctx, e))
		}
	}
}

// attempt delivers e until it is accepted, refused for good, or out of
// attempts.
func (p *InProcess) attempt(ctx context.Context, e cloudevents.Event) bool {
	delay := p.Backoff
	for n := 1; ; n++ {
		err := p.deliver(ctx, e)
		status := statusOf(err)
		switch {
		case status/100 == 2:
			return true
		case status/100 == 4:
			p.Log.Warn("events: event rejected, dropped", "type", e.Type(), "id", e.ID(), "status", status, "error", err)
			return false
		case n >= p.Attempts:
			p.Log.Error("events: event undeliverable, dropped", "type", e.Type(), "id", e.ID(), "status", status, "error", err)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// statusOf is the HTTP status a delivery's error stands for: a cehttp
// result's own, 400 for a permanent error, 500 for any other, 200 for none.
func statusOf(err error) int {
	var res *cehttp.Result
	switch {
	case err == nil:
		return 200
	case cloudevents.ResultAs(err, &res):
		return res.StatusCode
	case errors.Is(err, ErrPermanent):
		return 400
	}
	return 500
}

// ErrQueueFull: an in-process queue holds 10 000 events already.
var ErrQueueFull = errors.New("events: queue full")
