package broker

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/events"
)

func TestBrokerRetriesTransientFailuresAndDropsRejected(t *testing.T) {
	var calls, okAfter atomic.Int32
	okAfter.Store(3)
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case r.Header.Get("ce-type") == "test.reject":
			w.WriteHeader(http.StatusBadRequest)
		case n < okAfter.Load():
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer target.Close()
	b := &Broker{Target: target.URL, Backoff: 10 * time.Millisecond}
	defer b.Close()
	ingress := httptest.NewServer(b)
	defer ingress.Close()

	sender, _ := events.NewSender(ingress.URL, nil)
	ctx := context.Background()
	e, _ := events.New(ctx, "//t", events.TypePoolFill, events.PoolFill{ChallengeID: "c"})
	if err := sender.Send(ctx, e); err != nil {
		t.Fatalf("ingress refused: %v", err)
	}
	b.Wait()
	if got := calls.Load(); got != 3 {
		t.Fatalf("delivery attempts = %d, want 3 (two 500s then 200)", got)
	}
	rejected, _ := events.New(ctx, "//t", "test.reject", map[string]string{})
	if err := b.Send(ctx, rejected); err != nil {
		t.Fatal(err)
	}
	b.Wait()
	if delivered, dropped := b.Stats(); delivered != 1 || dropped != 1 {
		t.Fatalf("delivered %d dropped %d, want 1 and 1", delivered, dropped)
	}
	if got := calls.Load(); got != 4 {
		t.Fatalf("a 4xx was retried: %d calls", got)
	}
}
