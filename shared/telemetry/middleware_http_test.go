package telemetry

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
)

const (
	incomingTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	incomingSpanID  = "00f067aa0ba902b7"
	incomingParent  = "00-" + incomingTraceID + "-" + incomingSpanID + "-01"
)

func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/challenge/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":%q}`, r.PathValue("id"))
	})
	mux.HandleFunc("POST /api/v1/instance", func(w http.ResponseWriter, r *http.Request) {
		RecordError(r.Context(), fmt.Errorf("pulumi up failed"))
		http.Error(w, `{"code":13}`, http.StatusInternalServerError)
	})
	mux.HandleFunc("DELETE /api/v1/instance", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"code":5}`, http.StatusNotFound)
	})
	return mux
}

func TestHandlerSpan(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		path        string
		traceparent string
		wantName    string
		wantRoute   string
		wantStatus  int
		wantCode    codes.Code
	}{
		{"route from mux pattern", http.MethodGet, "/api/v1/challenge/c1", "", "GET /api/v1/challenge/{id}", "/api/v1/challenge/{id}", 200, codes.Unset},
		{"continues incoming trace", http.MethodGet, "/api/v1/challenge/c2", incomingParent, "GET /api/v1/challenge/{id}", "/api/v1/challenge/{id}", 200, codes.Unset},
		{"5xx is an error", http.MethodPost, "/api/v1/instance", "", "POST /api/v1/instance", "/api/v1/instance", 500, codes.Error},
		{"4xx is not a server error", http.MethodDelete, "/api/v1/instance", "", "DELETE /api/v1/instance", "/api/v1/instance", 404, codes.Unset},
		{"unmatched falls back to the name", http.MethodGet, "/nope", "", "GET challenge", "challenge", 404, codes.Unset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tel, spans, _ := newTestTelemetry(t)
			srv := httptest.NewServer(tel.Handler("challenge", testMux()))
			defer srv.Close()
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, nil)
			if tt.traceparent != "" {
				req.Header.Set("traceparent", tt.traceparent)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			// The flush happened before the response: the span is already there.
			got := spans.GetSpans()
			if len(got) != 1 {
				t.Fatalf("%d spans exported before the response, want 1", len(got))
			}
			s := got[0]
			if s.Name != tt.wantName {
				t.Errorf("span name %q, want %q", s.Name, tt.wantName)
			}
			if s.SpanKind != trace.SpanKindServer {
				t.Errorf("span kind %v", s.SpanKind)
			}
			if s.Status.Code != tt.wantCode {
				t.Errorf("status code %v, want %v", s.Status.Code, tt.wantCode)
			}
			attrs := attrMap(s.Attributes)
			if attrs["http.route"] != tt.wantRoute {
				t.Errorf("http.route %q, want %q", attrs["http.route"], tt.wantRoute)
			}
			if attrs["http.response.status_code"] != fmt.Sprint(tt.wantStatus) {
				t.Errorf("http.response.status_code %q", attrs["http.response.status_code"])
			}
			if attrs["http.request.method"] != tt.method {
				t.Errorf("http.request.method %q", attrs["http.request.method"])
			}
			if tt.traceparent != "" {
				if s.SpanContext.TraceID().String() != incomingTraceID || s.Parent.SpanID().String() != incomingSpanID || !s.Parent.IsRemote() {
					t.Errorf("trace %s parent %s (remote %v): incoming traceparent not continued", s.SpanContext.TraceID(), s.Parent.SpanID(), s.Parent.IsRemote())
				}
			} else if s.Parent.IsValid() {
				t.Errorf("unexpected parent %v", s.Parent)
			}
		})
	}
}

func TestHandlerRecordsRequestDuration(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	srv := httptest.NewServer(tel.Handler("challenge", testMux()))
	defer srv.Close()
	for _, p := range []string{"/api/v1/challenge/a", "/api/v1/challenge/b"} {
		resp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	h := findMetric(t, collect(t, reader), MetricHTTPDuration).Data.(metricdata.Histogram[float64])
	if len(h.DataPoints) != 1 {
		t.Fatalf("%d data points, want 1 (same method/route/status)", len(h.DataPoints))
	}
	dp := h.DataPoints[0]
	if dp.Count != 2 {
		t.Errorf("count %d, want 2", dp.Count)
	}
	want := map[string]string{"http.request.method": "GET", "http.route": "/api/v1/challenge/{id}", "http.response.status_code": "200"}
	if got := attrMap(dp.Attributes.ToSlice()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("attributes %v, want %v", got, want)
	}
}

// flushTelemetry builds a Telemetry whose exporters record when they ran and
// take a little while, so a response sent before them would be observed first.
func flushTelemetry(t *testing.T) (*Telemetry, *recordingSpanExporter, *recordingMetricExporter) {
	t.Helper()
	slow := func() { time.Sleep(30 * time.Millisecond) }
	se := &recordingSpanExporter{delay: slow}
	me := &recordingMetricExporter{delay: slow}
	reader := sdkmetric.NewPeriodicReader(me, sdkmetric.WithInterval(time.Hour))
	tel, err := Setup(context.Background(), "flush-svc", "", WithSpanExporter(se), WithMetricReader(reader),
		WithoutGlobal(), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel, se, me
}

func TestFlushBeforeUnaryResponse(t *testing.T) {
	tel, se, me := flushTelemetry(t)
	srv := httptest.NewServer(tel.Handler("challenge", testMux()))
	defer srv.Close()
	for i := 1; i <= 3; i++ {
		resp, err := srv.Client().Get(srv.URL + "/api/v1/challenge/x")
		if err != nil {
			t.Fatal(err)
		}
		// Observed the moment the status line arrived, before reading the body.
		spansDone, metricsDone := se.exported.Load(), me.exported.Load()
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != `{"id":"x"}` || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("response %q %v altered by buffering", body, resp.Header)
		}
		if spansDone < int64(i) || metricsDone < int64(i) {
			t.Fatalf("request %d: client saw the response after %d span and %d metric exports", i, spansDone, metricsDone)
		}
	}
	if se.spans.Load() != 3 {
		t.Errorf("%d spans exported, want 3", se.spans.Load())
	}
}

func TestFlushBeforeStreamEnds(t *testing.T) {
	tel, se, me := flushTelemetry(t)
	firstSeen := make(chan struct{})
	h := tel.Handler("query", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		fmt.Fprintln(w, `{"result":1}`)
		w.(http.Flusher).Flush()
		<-firstSeen // the client has the first line while the handler still runs
		fmt.Fprintln(w, `{"result":2}`)
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
		fmt.Fprintln(w, `{"result":3}`) // last write, not flushed by the handler
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "{\"result\":1}\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if n := se.exported.Load() + me.exported.Load(); n != 0 {
		t.Fatalf("%d exports before the handler finished", n)
	}
	close(firstSeen)
	rest, err := io.ReadAll(br) // returns at the terminating chunk
	if err != nil {
		t.Fatal(err)
	}
	if se.exported.Load() != 1 || me.exported.Load() != 1 {
		t.Fatalf("stream ended after %d span / %d metric exports, want 1/1", se.exported.Load(), me.exported.Load())
	}
	if string(rest) != "{\"result\":2}\n{\"result\":3}\n" {
		t.Fatalf("rest of stream %q", rest)
	}
	if resp.ContentLength != -1 || len(resp.TransferEncoding) == 0 {
		t.Errorf("stream was not chunked: length %d, TE %v", resp.ContentLength, resp.TransferEncoding)
	}
}

func TestFlushFailureDoesNotFailRequest(t *testing.T) {
	se := &recordingSpanExporter{}
	se.block.Store(true)
	tel, err := Setup(context.Background(), "stuck-svc", "", WithSpanExporter(se), WithoutGlobal(),
		WithFlushTimeout(50*time.Millisecond), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = tel.Shutdown(ctx)
	}()
	srv := httptest.NewServer(tel.Handler("challenge", testMux()))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/api/v1/challenge/y")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != `{"id":"y"}` {
		t.Fatalf("got %d %q despite a stuck exporter", resp.StatusCode, body)
	}
	if se.exported.Load() != 0 {
		t.Fatalf("stuck exporter reported success")
	}
	if !tel.Degraded() {
		t.Fatal("a failed flush did not shorten the next ones")
	}
	// The collector comes back: the first successful flush ends the degraded mode.
	se.block.Store(false)
	resp, err = srv.Client().Get(srv.URL + "/api/v1/challenge/z")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if tel.Degraded() {
		t.Fatal("still degraded after a successful flush")
	}
}

func TestDisabledPropagatesTraceContext(t *testing.T) {
	tel := Disabled()
	var seen trace.SpanContext
	var injected string
	h := tel.Handler("x", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := tel.Tracer().Start(r.Context(), "child")
		defer span.End()
		seen = trace.SpanContextFromContext(ctx)
		e := cloudevents.NewEvent()
		InjectEvent(ctx, &e)
		injected, _ = e.Extensions()["traceparent"].(string)
		w.WriteHeader(http.StatusNoContent)
	}))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("traceparent", incomingParent)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d", rec.Code)
	}
	if seen.TraceID().String() != incomingTraceID {
		t.Fatalf("handler saw trace %s, want %s", seen.TraceID(), incomingTraceID)
	}
	if !strings.Contains(injected, incomingTraceID) {
		t.Fatalf("outgoing event traceparent %q lost the trace", injected)
	}
}

func TestHandlerPanicEndsSpanAndRepanics(t *testing.T) {
	tel, spans, _ := newTestTelemetry(t)
	h := tel.Handler("boom", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("kaboom") }))
	func() {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Fatalf("recovered %v, want the handler's panic", r)
			}
		}()
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/", nil))
	}()
	got := spans.GetSpans()
	if len(got) != 1 || got[0].Status.Code != codes.Error {
		t.Fatalf("spans %+v, want one error span", got)
	}
}

func TestRouteOf(t *testing.T) {
	for in, want := range map[string]string{
		"":                              "",
		"/api/v1/challenge/":            "/api/v1/challenge/",
		"GET /api/v1/challenge/{id}":    "/api/v1/challenge/{id}",
		"POST example.com/api/v1/x":     "/api/v1/x",
		"example.com/api/v1/instance/":  "/api/v1/instance/",
		"DELETE  /api/v1/instance/{id}": "/api/v1/instance/{id}",
	} {
		if got := routeOf(in); got != want {
			t.Errorf("routeOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func attrMap(kvs []attribute.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}
