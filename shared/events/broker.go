package events

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// Broker is a small in-process stand-in for a Knative Broker, for the local
// run and the end-to-end tests: it accepts events over HTTP (202 at once, as
// a broker's ingress does), then delivers each to Target in binary mode,
// retrying 5xx answers and network errors with exponential backoff and
// dropping events answered 4xx. Delivery is at least once, with Workers
// deliveries in flight, like the real brokers that challfn's handlers are
// written for (idempotent, order-independent).
type Broker struct {
	Target   string
	Workers  int           // default 8
	Attempts int           // default 6
	Backoff  time.Duration // first retry delay, doubled each time; default 200ms
	Client   *http.Client
	Log      *slog.Logger

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

func (b *Broker) init() {
	b.once.Do(func() {
		if b.Workers <= 0 {
			b.Workers = 8
		}
		if b.Attempts <= 0 {
			b.Attempts = 6
		}
		if b.Backoff <= 0 {
			b.Backoff = 200 * time.Millisecond
		}
		if b.Client == nil {
			b.Client = http.DefaultClient
		}
		if b.Log == nil {
			b.Log = slog.Default()
		}
		b.idle = sync.NewCond(&b.mu)
		b.queue = make(chan cloudevents.Event, 10000)
		ctx, cancel := context.WithCancel(context.Background())
		b.stop = cancel
		for i := 0; i < b.Workers; i++ {
			b.wg.Add(1)
			go b.work(ctx)
		}
	})
}

// ServeHTTP is the broker's ingress.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.init()
	e, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		http.Error(w, "not a CloudEvent: "+err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	b.inflight++
	b.mu.Unlock()
	select {
	case b.queue <- *e:
		w.WriteHeader(http.StatusAccepted)
	default:
		b.done(false)
		http.Error(w, "broker queue full", http.StatusServiceUnavailable)
	}
}

// Send is the broker's ingress for in-process senders (a Sender).
func (b *Broker) Send(ctx context.Context, e cloudevents.Event) error {
	b.init()
	b.mu.Lock()
	b.inflight++
	b.mu.Unlock()
	select {
	case b.queue <- e:
		return nil
	case <-ctx.Done():
		b.done(false)
		return ctx.Err()
	}
}

// Wait blocks until every accepted event was delivered or dropped.
func (b *Broker) Wait() {
	b.init()
	b.mu.Lock()
	for b.inflight > 0 {
		b.idle.Wait()
	}
	b.mu.Unlock()
}

// Stats returns how many events were delivered and dropped so far.
func (b *Broker) Stats() (delivered, dropped int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delivered, b.dropped
}

// Close stops delivering; events still queued are dropped.
func (b *Broker) Close() {
	b.init()
	b.stop()
	b.wg.Wait()
}

func (b *Broker) done(delivered bool) {
	b.mu.Lock()
	b.inflight--
	if delivered {
		b.delivered++
	} else {
		b.dropped++
	}
	if b.inflight == 0 {
		b.idle.Broadcast()
	}
	b.mu.Unlock()
}

func (b *Broker) work(ctx context.Context) {
	defer b.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-b.queue:
			b.done(b.deliver(ctx, e))
		}
	}
}

func (b *Broker) deliver(ctx context.Context, e cloudevents.Event) bool {
	delay := b.Backoff
	for attempt := 1; ; attempt++ {
		status, err := b.post(ctx, e)
		switch {
		case err == nil && status/100 == 2:
			return true
		case err == nil && status/100 == 4:
			b.Log.Warn("broker: event rejected, dropped", "type", e.Type(), "id", e.ID(), "status", status)
			return false
		case attempt >= b.Attempts:
			b.Log.Error("broker: event undeliverable, dropped", "type", e.Type(), "id", e.ID(), "status", status, "error", err)
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

func (b *Broker) post(ctx context.Context, e cloudevents.Event) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.Target, nil)
	if err != nil {
		return 0, err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		return 0, err
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}
