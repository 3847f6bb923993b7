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
// a broker's ingress does), then delivers each to Target in binary mode, with
// the InProcess delivery rules (at least once, Workers at a time, 5xx and
// network errors retried with exponential backoff, 4xx dropped), which
// challfn's handlers are written for (idempotent, order-independent).
type Broker struct {
	Target   string
	Workers  int           // default 8
	Attempts int           // default 6
	Backoff  time.Duration // first retry delay, doubled each time; default 200ms
	Client   *http.Client
	Log      *slog.Logger

	once sync.Once
	q    *InProcess
}

func (b *Broker) init() {
	b.once.Do(func() {
		if b.Client == nil {
			b.Client = http.DefaultClient
		}
		b.q = &InProcess{Workers: b.Workers, Attempts: b.Attempts, Backoff: b.Backoff, Log: b.Log, deliver: b.post}
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
	if err := b.q.Send(r.Context(), *e); err != nil {
		http.Error(w, "broker: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// Send is the broker's ingress for in-process senders (a Sender).
func (b *Broker) Send(ctx context.Context, e cloudevents.Event) error {
	b.init()
	return b.q.Send(ctx, e)
}

// Wait blocks until every accepted event was delivered or dropped.
func (b *Broker) Wait() { b.init(); b.q.Wait() }

// Stats returns how many events were delivered and dropped so far.
func (b *Broker) Stats() (delivered, dropped int) { b.init(); return b.q.Stats() }

// Close stops delivering; events still queued are dropped.
func (b *Broker) Close() { b.init(); b.q.Close() }

// post delivers e to Target; its answer's status is the delivery's outcome.
func (b *Broker) post(ctx context.Context, e cloudevents.Event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.Target, nil)
	if err != nil {
		return err
	}
	if err := cehttp.WriteRequest(ctx, binding.ToMessage(&e), req); err != nil {
		return Permanent(err)
	}
	resp, err := b.Client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		return nil
	}
	return cehttp.NewResult(resp.StatusCode, "%s answered %d", b.Target, resp.StatusCode)
}
