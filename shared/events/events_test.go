package events

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"go.opentelemetry.io/otel/trace"

	"github.com/challfn/challfn/shared/events/pubsubtest"
)

// A sending context with a known trace, to follow it across the delivery.
func tracedContext(t *testing.T) (context.Context, trace.TraceID) {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
	return trace.ContextWithSpanContext(context.Background(), sc), tid
}

// received collects what the function under test was handed.
type received struct {
	mu     sync.Mutex
	events []cloudevents.Event
	traces []trace.TraceID
	ch     chan struct{}
}

func newReceived() *received { return &received{ch: make(chan struct{}, 100)} }

func (r *received) handle(ctx context.Context, e cloudevents.Event) error {
	e, err := Unwrap(e)
	if err != nil {
		return Result(err)
	}
	ctx = Context(ctx, e)
	r.mu.Lock()
	r.events = append(r.events, e)
	r.traces = append(r.traces, trace.SpanContextFromContext(ctx).TraceID())
	r.mu.Unlock()
	r.ch <- struct{}{}
	if e.Type() == "test.fail" {
		return Result(Permanent(errors.New("never works")))
	}
	return nil
}

func (r *received) wait(t *testing.T, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-r.ch:
		case <-time.After(60 * time.Second):
			t.Fatalf("timed out waiting for event %d", i+1)
		}
	}
}

var (
	frameworkOnce sync.Once
	frameworkAddr string
	frameworkRecv = newReceived()
)

// startFramework serves frameworkRecv through the real functions framework
// (binary, structured and Pub/Sub push requests all go through its code).
func startFramework(t *testing.T) string {
	frameworkOnce.Do(func() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if err := funcframework.RegisterCloudEventFunctionContext(context.Background(), "/", frameworkRecv.handle); err != nil {
			t.Fatal(err)
		}
		go func() { _ = funcframework.StartHostPort("127.0.0.1", strconv.Itoa(port)) }()
		frameworkAddr = "127.0.0.1:" + strconv.Itoa(port)
		for i := 0; i < 100; i++ {
			if c, err := net.Dial("tcp", frameworkAddr); err == nil {
				c.Close()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return frameworkAddr
}

func TestHTTPSenderDeliversBinaryEventsWithTraceContext(t *testing.T) {
	addr := startFramework(t)
	sender, err := NewSender("http://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, tid := tracedContext(t)
	e, err := New(ctx, "//challfn/test", TypeInstanceDelete, InstanceDelete{ChallengeID: "c1", Identity: "0123456789abcdef"})
	if err != nil {
		t.Fatal(err)
	}
	if err := sender.Send(ctx, e); err != nil {
		t.Fatal(err)
	}
	frameworkRecv.wait(t, 1)
	frameworkRecv.mu.Lock()
	got, gotTrace := frameworkRecv.events[len(frameworkRecv.events)-1], frameworkRecv.traces[len(frameworkRecv.traces)-1]
	frameworkRecv.mu.Unlock()
	var data InstanceDelete
	if err := Decode(got, &data); err != nil {
		t.Fatal(err)
	}
	if got.ID() != e.ID() || got.Type() != TypeInstanceDelete || data.Identity != "0123456789abcdef" {
		t.Fatalf("received %v %+v", got, data)
	}
	if gotTrace != tid {
		t.Fatalf("trace id %s, want %s", gotTrace, tid)
	}
}

func TestHandlerStatusStopsOrAllowsRetries(t *testing.T) {
	addr := startFramework(t)
	sender, _ := NewSender("http://"+addr+"/", nil)
	ctx := context.Background()
	e, _ := New(ctx, "//challfn/test", "test.fail", map[string]string{})
	err := sender.Send(ctx, e)
	frameworkRecv.wait(t, 1)
	if err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("permanent failure answered %v, want a 400", err)
	}
}

func TestResult(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"ok", nil, 0},
		{"permanent", Permanent(errors.New("bad")), 400},
		{"wrapped permanent", errors.Join(errors.New("ctx"), Permanent(errors.New("bad"))), 400},
		{"transient", errors.New("etcd down"), 500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := Result(tc.err)
			if tc.want == 0 {
				if res != nil {
					t.Fatalf("Result = %v, want nil", res)
				}
				return
			}
			var hr *cehttp.Result
			if !cloudevents.ResultAs(res, &hr) || hr.StatusCode != tc.want {
				t.Fatalf("Result = %v, want status %d", res, tc.want)
			}
		})
	}
}

func TestNewSenderRejectsBadSinks(t *testing.T) {
	for _, sink := range []string{"ftp://x", "pubsub://projects/p", "pubsub://topics/t", "::"} {
		if _, err := NewSender(sink, nil); err == nil {
			t.Errorf("NewSender(%q) accepted it", sink)
		}
	}
}

// Delivery as on Cloud Run: publish to a topic of the real Pub/Sub emulator,
// whose push subscription POSTs to a function served by the functions
// framework; the function sees the original event and its trace.
func TestPubSubDeliveryThroughEmulator(t *testing.T) {
	emu := pubsubtest.Start(t)
	addr := startFramework(t)
	ctx, tid := tracedContext(t)
	topic, err := emu.CreateTopic(ctx, "challfn-events")
	if err != nil {
		t.Fatal(err)
	}
	if err := emu.CreatePushSubscription(ctx, "to-instance", topic, "http://"+addr+"/"+topic); err != nil {
		t.Fatal(err)
	}
	sender, err := NewSender("pubsub://"+topic, nil, WithPubSubEmulator(emu.Host))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(ctx, "//challfn/test", TypePoolFill, PoolFill{ChallengeID: "chall-7"})
	if err := sender.Send(ctx, e); err != nil {
		t.Fatal(err)
	}
	frameworkRecv.wait(t, 1)
	frameworkRecv.mu.Lock()
	got, gotTrace := frameworkRecv.events[len(frameworkRecv.events)-1], frameworkRecv.traces[len(frameworkRecv.traces)-1]
	frameworkRecv.mu.Unlock()
	var data PoolFill
	if err := Decode(got, &data); err != nil {
		t.Fatal(err)
	}
	if got.Type() != TypePoolFill || got.ID() != e.ID() || data.ChallengeID != "chall-7" {
		t.Fatalf("received %v (%+v)", got, data)
	}
	if gotTrace != tid {
		t.Fatalf("trace id %s, want %s", gotTrace, tid)
	}
}

// The /events handler of the instance function accepts the three encodings
// events arrive in; its status tells the broker whether to retry.
func TestHTTPHandlerEncodings(t *testing.T) {
	recv := newReceived()
	h, err := HTTPHandler(context.Background(), recv.handle)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, tid := tracedContext(t)

	// Binary mode, the encoding of Knative brokers and of our sender.
	sender, _ := NewSender(srv.URL+"/events", nil)
	e, _ := New(ctx, "//challfn/test", TypePoolFill, PoolFill{ChallengeID: "a"})
	if err := sender.Send(ctx, e); err != nil {
		t.Fatal(err)
	}
	// A raw Pub/Sub push envelope.
	push := `{"message":{"messageId":"7","data":"eyJjaGFsbGVuZ2VJZCI6ImIifQ==","attributes":{"ce-specversion":"1.0","ce-id":"e2","ce-source":"//challfn/x","ce-type":"io.challfn.pool.fill","ce-traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},"subscription":"projects/p/subscriptions/s"}`
	resp, err := http.Post(srv.URL+"/events", "application/json", strings.NewReader(push))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push answered %s", resp.Status)
	}
	recv.wait(t, 2)
	for i, want := range []string{"a", "b"} {
		var data PoolFill
		if err := Decode(recv.events[i], &data); err != nil || data.ChallengeID != want || recv.traces[i] != tid {
			t.Fatalf("event %d: %+v %v trace %s", i, data, err, recv.traces[i])
		}
	}
	// Garbage is a 400, so no broker retries it.
	resp, err = http.Post(srv.URL+"/events", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("garbage answered %s", resp.Status)
	}
}
