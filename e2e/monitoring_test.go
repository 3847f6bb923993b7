package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/broker"
	"github.com/challfn/challfn/internal/localstack"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/lock"
)

// The janitor rule of the test copy of alerts.yml: 20 s without a successful
// run for 4 s, instead of 15 min for 5 min.
const (
	testJanitorStale = "20"
	testJanitorFor   = "4s"
)

// TestMonitoring runs challfn as production does — one process per function
// (challenge, instance, janitor), each set up by the functions' main with
// OTEL_EXPORTER_OTLP_ENDPOINT, events through a broker — against the real
// monitoring stack (Jaeger v2, Prometheus, Alertmanager on loopback), walks
// the lifecycle (challenge with a pool, claim, renew, expiry by the janitor,
// update, delete) and checks through the stack's HTTP APIs what an operator
// would look at: the trace of an instance creation across the request and the
// pool fill it caused, the counts, the RED series, the alerts, and that a
// function frozen right after answering an event lost no span.
func TestMonitoring(t *testing.T) {
	if os.Getenv("CHALLFN_E2E_MONITORING") != "1" {
		t.Skip("set CHALLFN_E2E_MONITORING=1 (scripts/install-monitoring.sh installs the stack)")
	}
	root := testenv.Root()
	tmp := t.TempDir()

	// Every rule of alerts.yml loads; the test copy too.
	rules := monitoringTestRules(t, root, tmp)
	for _, f := range []string{filepath.Join(root, "knative", "monitoring", "alerts.yml"), rules} {
		if out, err := exec.Command("promtool", "check", "rules", f).CombinedOutput(); err != nil {
			t.Fatalf("promtool check rules %s: %v\n%s", f, err, out)
		}
	}
	stack, err := localstack.Start(context.Background(), localstack.Options{Root: root, Dir: filepath.Join(tmp, "stack"), FreePorts: true, Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- jaeger log (tail) ---\n%s", tailString(stack.Log("jaeger"), 2000))
			t.Logf("--- prometheus log (tail) ---\n%s", tailString(stack.Log("prometheus"), 2000))
		}
		stack.Close()
	})

	// etcd, the registry and the shared Pulumi backend and scenario store;
	// the in-process functions of testenv stay unused.
	env := testenv.Start(t, testenv.Options{Events: testenv.Inline})
	ref := env.Scenario(t, "outputs")

	var brokerTarget atomic.Pointer[broker.Broker]
	brokerSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		brokerTarget.Load().ServeHTTP(w, r)
	}))
	t.Cleanup(brokerSrv.Close)
	common := functionEnv(env,
		"LOCK_TTL=5s",
		"EVENTS_SINK_URL="+brokerSrv.URL,
		"OTEL_EXPORTER_OTLP_ENDPOINT="+stack.OTLP,
		"LOG_LEVEL=info",
	)
	fn := map[string]*monitoringFunction{}
	for _, target := range []string{"challenge", "instance", "janitor"} {
		fn[target] = startMonitoringFunction(t, tmp, target, append(slices.Clone(common), "CACHE_DIR="+filepath.Join(tmp, target+"-cache")))
	}
	broker := &broker.Broker{Target: fn["instance"].URL + instance.EventsPath, Backoff: 100 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	brokerTarget.Store(broker)
	t.Cleanup(broker.Close)

	call := func(f *monitoringFunction, method, path, body string, tp string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, f.URL+path, strings.NewReader(body))
		if tp != "" {
			req.Header.Set("traceparent", tp)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	mustCall := func(f *monitoringFunction, method, path, body, tp string) string {
		t.Helper()
		code, b := call(f, method, path, body, tp)
		if code != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, code, b)
		}
		return b
	}
	janitorTick := func(tp trace.SpanContext) {
		t.Helper()
		s, err := events.NewSender(fn["janitor"].URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		if tp.IsValid() {
			ctx = trace.ContextWithRemoteSpanContext(ctx, tp)
		}
		e, _ := events.New(ctx, "//challfn/test/scheduler", events.TypeKnativePing, map[string]string{})
		if err := s.Send(ctx, e); err != nil {
			t.Fatalf("janitor: %v", err)
		}
	}
	poolCounts := func() (claimed, pooled int64) {
		c, err := env.App.Store.PoolCounts(context.Background(), "mon")
		if err != nil {
			t.Fatal(err)
		}
		return c.Claimed, c.Pooled
	}

	// 1. A challenge with a pool of one; its fill deploys in the instance function.
	mustCall(fn["challenge"], "POST", "/api/v1/challenge", `{"id":"mon","scenario":"`+ref+`","timeout":"30s","min":1}`, "")
	eventually(t, "pool filled", 2*time.Minute, func() error {
		if _, p := poolCounts(); p != 1 {
			return fmt.Errorf("pooled %d", p)
		}
		return nil
	})

	// 2. A claim, traced from a known trace id: the request takes the pooled
	// instance, the refill event it causes deploys another one. The test holds
	// the challenge's writer lock for a second first (what a long update
	// does), so the claim waits for its reader lock.
	held, err := env.App.Locks.Acquire(context.Background(), lock.Chain{Challenge: "mon", ChallengeMode: lock.Write})
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(time.Second, func() { _ = held.Release(context.Background()) })
	createTrace, createTP := newTraceparent()
	mustCall(fn["instance"], "POST", "/api/v1/instance", `{"challengeId":"mon","sourceId":"1"}`, createTP)
	eventually(t, "pool refilled", 2*time.Minute, func() error {
		if c, p := poolCounts(); c != 1 || p != 1 {
			return fmt.Errorf("claimed %d pooled %d", c, p)
		}
		return nil
	})

	// 3. The counts in Prometheus, as the dashboard queries them; renewals
	// keep the instance alive and make the instance function flush (the
	// counts are read from etcd at most every 15 s per function instance).
	prom := func(q string) (map[string]float64, error) { return promQuery(stack.Prometheus, q) }
	eventually(t, "counts in Prometheus", 90*time.Second, func() error {
		mustCall(fn["instance"], "PATCH", "/api/v1/instance/mon/1", `{}`, "")
		got, err := prom(`max by (pool) (instances{challenge="mon"})`)
		if err != nil {
			return err
		}
		ch, err := prom(`max(challenges)`)
		if err != nil {
			return err
		}
		if got[`pool="false"`] != 1 || got[`pool="true"`] != 1 || ch[""] != 1 {
			return fmt.Errorf("instances %v challenges %v", got, ch)
		}
		return nil
	})

	// 4. Expiry: no more renewals; the janitor finds the instance expired and
	// its delete event destroys it.
	eventually(t, "expired instance deleted by the janitor", 2*time.Minute, func() error {
		janitorTick(trace.SpanContext{})
		broker.Wait()
		if code, _ := call(fn["instance"], "GET", "/api/v1/instance/mon/1", "", ""); code != http.StatusNotFound {
			return fmt.Errorf("instance still there (%d)", code)
		}
		return nil
	})

	// 5. Hot update of a claimed instance (the pooled one is replaced, not
	// updated), then deletion of the challenge.
	mustCall(fn["instance"], "POST", "/api/v1/instance", `{"challengeId":"mon","sourceId":"2"}`, "")
	mustCall(fn["challenge"], "PATCH", "/api/v1/challenge/mon", `{"updateMask":"additional","additional":{"k":"v"}}`, "")
	mustCall(fn["challenge"], "DELETE", "/api/v1/challenge/mon", "", "")
	broker.Wait()
	if s := env.Stacks(t); len(s) != 0 {
		t.Fatalf("stacks left: %v", s)
	}

	// The trace of the instance creation: the handler, the pool claim, locks
	// and etcd calls in the request, and in the pool fill it caused (another
	// delivery, same trace) the lock, etcd calls, scenario and Pulumi spans.
	var tr jaegerTrace
	eventually(t, "creation trace in Jaeger", time.Minute, func() error {
		var err error
		if tr, err = getTrace(stack.Jaeger, createTrace); err != nil {
			return err
		}
		if tr.find("pulumi.up") == nil {
			return fmt.Errorf("no pulumi.up yet in %v", tr.names())
		}
		return nil
	})
	for _, want := range []struct{ name, service string }{
		{"POST /api/v1/instance", "challfn-instance"},
		{"pool.claim", "challfn-instance"},
		{"lock.acquire", "challfn-instance"},
		{"lock.wait.challenge.read", "challfn-instance"},
		{"etcd Txn", "challfn-instance"},
		{"process " + events.TypePoolFill, "challfn-instance"},
		{"pool.fill", "challfn-instance"},
		{"scenario.get", "challfn-instance"},
		{"pulumi.up", "challfn-instance"},
	} {
		s := tr.find(want.name)
		if s == nil {
			t.Errorf("span %q missing from the creation trace: %v", want.name, tr.names())
			continue
		}
		if got := tr.service(s); got != want.service {
			t.Errorf("span %q from %q, want %q", want.name, got, want.service)
		}
	}
	// Two claims: the lock-free one, fenced by the writer lock the test
	// holds, then the one under the challenge's reader lock, which claims.
	var hot, locked *jaegerSpan
	for _, s := range tr.Spans {
		if s.OperationName == "pool.claim" && s.tag("pool.path") == "hot" {
			hot = s
		}
		if s.OperationName == "pool.claim" && s.tag("pool.path") == "locked" {
			locked = s
		}
	}
	if hot == nil || hot.tag("pool.fenced") != "true" || hot.tag("pool.hit") != "false" {
		t.Errorf("no fenced lock-free pool.claim: %v", hot)
	}
	if locked == nil || locked.tag("challenge_id") != "mon" || locked.tag("pool.hit") != "true" || locked.tag("identity") == "" {
		t.Errorf("pool.claim under the lock: %v", locked)
	}
	if s := tr.find("pulumi.up"); s != nil {
		if n, _ := strconv.Atoi(s.tag("pulumi.resources.create")); n < 1 || s.tag("challenge_id") != "mon" || s.tag("identity") == "" {
			t.Errorf("pulumi.up tags: %v", s.Tags)
		}
	}
	for _, s := range tr.Spans {
		if s.tag("source_id") != "" || strings.Contains(s.tag("url.path"), "sourceId") {
			t.Errorf("span %q carries the source id: %v", s.OperationName, s.Tags)
		}
	}
	t.Logf("FIGURE spans in the trace of one instance claim and the pool fill it caused: %d (%s)", len(tr.Spans), tr.census())

	// The logs of that request carry its trace, challenge id and identity.
	if line := findLogLine(t, fn["instance"].Log, "instance claimed from pool"); line == nil {
		t.Error("no log line for the claim")
	} else if line["trace_id"] != createTrace || line["challenge_id"] != "mon" || line["identity"] == nil || line["source_id"] != nil {
		t.Errorf("claim log line: %v", line)
	}

	// Metrics of the operations, through the collector into Prometheus.
	for _, q := range []string{
		`sum(challfn_instance_deploy_duration_seconds_count{op="pool",outcome="ok"})`,
		`sum(challfn_instance_deploy_duration_seconds_count{op="update",outcome="ok"})`,
		`sum(challfn_instance_destroy_duration_seconds_count{op="expire",outcome="ok"})`,
		`sum(challfn_instance_destroy_duration_seconds_count{op="delete",outcome="ok"})`,
		`sum(challfn_lock_wait_duration_seconds_count{level="challenge"})`,
		`sum(challfn_events_handled_total{event_type="io.challfn.pool.fill",outcome="ok"})`,
		`sum(challfn_janitor_runs_total{outcome="ok"})`,
		`sum(challfn_janitor_deletions_total)`,
		`sum(http_server_request_duration_seconds_count{http_route="/api/v1/instance/{}/{}"})`,
		// RED series of every function (spanmetrics).
		`sum(traces_span_metrics_calls_total{service_name="challfn-challenge",span_kind="SPAN_KIND_SERVER"})`,
		`sum(traces_span_metrics_calls_total{service_name="challfn-instance",span_kind="SPAN_KIND_SERVER"})`,
		`sum(traces_span_metrics_calls_total{service_name="challfn-instance",span_kind="SPAN_KIND_CONSUMER"})`,
		`sum(traces_span_metrics_calls_total{service_name="challfn-janitor",span_kind="SPAN_KIND_CONSUMER"})`,
		`sum(traces_span_metrics_duration_milliseconds_count{service_name="challfn-instance",span_name="POST /api/v1/instance"})`,
	} {
		eventually(t, q, 30*time.Second, func() error {
			got, err := prom(q)
			if err != nil {
				return err
			}
			if got[""] < 1 {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
	}

	// The counts after the deletion, from the janitor (it runs on a schedule,
	// so its series is the fresh one; the other functions' series keep their
	// last value until the collector expires them). The per-challenge series
	// of a deleted challenge are no longer reported, and linger the same way.
	eventually(t, "counts after deletion", 90*time.Second, func() error {
		janitorTick(trace.SpanContext{})
		got, err := prom(`max(challenges{job="challfn-janitor"})`)
		if err != nil {
			return err
		}
		if v, ok := got[""]; !ok || v != 0 {
			return fmt.Errorf("challenges %v", got)
		}
		return nil
	})

	// Every rule of the test copy is loaded, and the janitor rule is quiet
	// while the janitor runs.
	eventually(t, "janitor alert inactive while the janitor runs", 30*time.Second, func() error {
		janitorTick(trace.SpanContext{})
		rs, err := promRules(stack.Prometheus)
		if err != nil {
			return err
		}
		for _, name := range alertNames(t, rules) {
			if _, ok := rs[name]; !ok {
				return fmt.Errorf("rule %s not loaded (%v)", name, rs)
			}
		}
		if rs["ChallfnJanitorNotRunning"] != "inactive" {
			return fmt.Errorf("ChallfnJanitorNotRunning is %s", rs["ChallfnJanitorNotRunning"])
		}
		return nil
	})

	// A CloudEvent function frozen right after its response (SIGSTOP, what a
	// platform does to an idle instance) lost no span: the flush happened
	// before the response.
	frozenTrace, _ := newTraceparent()
	tid, _ := trace.TraceIDFromHex(frozenTrace)
	janitorTick(trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled, Remote: true}))
	fn["janitor"].signal(syscall.SIGSTOP)
	eventually(t, "frozen janitor's spans in Jaeger", 30*time.Second, func() error {
		tr, err := getTrace(stack.Jaeger, frozenTrace)
		if err != nil {
			return err
		}
		for _, name := range []string{"process " + events.TypeKnativePing, "janitor.run", "etcd Txn"} {
			if s := tr.find(name); s == nil || tr.service(s) != "challfn-janitor" {
				return fmt.Errorf("%s missing: %v", name, tr.names())
			}
		}
		return nil
	})

	// The janitor stays frozen: its alert fires, and reaches Alertmanager.
	eventually(t, "ChallfnJanitorNotRunning firing", 90*time.Second, func() error {
		rs, err := promRules(stack.Prometheus)
		if err != nil {
			return err
		}
		if rs["ChallfnJanitorNotRunning"] != "firing" {
			return fmt.Errorf("state %q", rs["ChallfnJanitorNotRunning"])
		}
		return nil
	})
	eventually(t, "alert in Alertmanager", 30*time.Second, func() error {
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		if err := getJSONInto(stack.Alertmanager+"/api/v2/alerts", &alerts); err != nil {
			return err
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == "ChallfnJanitorNotRunning" && a.Labels["severity"] == "page" {
				return nil
			}
		}
		return fmt.Errorf("alerts: %v", alerts)
	})
}

// monitoringTestRules writes a copy of alerts.yml whose janitor rule fires
// within seconds, and returns its path.
func monitoringTestRules(t *testing.T, root, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(root, "knative", "monitoring", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	i := strings.Index(s, "alert: ChallfnJanitorNotRunning")
	if i < 0 {
		t.Fatal("alerts.yml: no ChallfnJanitorNotRunning")
	}
	head, rule := s[:i], s[i:]
	for from, to := range map[string]string{
		"max(challfn_janitor_last_success_seconds) > 900": "max(challfn_janitor_last_success_seconds) > " + testJanitorStale,
		"for: 5m": "for: " + testJanitorFor,
	} {
		if !strings.Contains(rule, from) {
			t.Fatalf("alerts.yml: janitor rule without %q", from)
		}
		rule = strings.Replace(rule, from, to, 1)
	}
	p := filepath.Join(dir, "alerts.yml")
	if err := os.WriteFile(p, []byte(head+rule), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func alertNames(t *testing.T, rulesFile string) []string {
	t.Helper()
	raw, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, line := range strings.Split(string(raw), "\n") {
		if n, ok := strings.CutPrefix(strings.TrimSpace(line), "- alert:"); ok {
			names = append(names, strings.TrimSpace(n))
		}
	}
	if len(names) < 6 {
		t.Fatalf("only %d alert rules in %s", len(names), rulesFile)
	}
	return names
}

// newTraceparent returns a fresh trace id and a traceparent header in it.
func newTraceparent() (traceID, header string) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	traceID = hex.EncodeToString(b[:16])
	return traceID, "00-" + traceID + "-" + hex.EncodeToString(b[16:]) + "-01"
}

type jaegerSpan struct {
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	ProcessID     string `json:"processID"`
	Tags          []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"tags"`
}

func (s *jaegerSpan) tag(k string) string {
	for _, t := range s.Tags {
		if t.Key == k {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

type jaegerTrace struct {
	Spans     []*jaegerSpan `json:"spans"`
	Processes map[string]struct {
		ServiceName string `json:"serviceName"`
	} `json:"processes"`
}

func (tr jaegerTrace) find(name string) *jaegerSpan {
	for _, s := range tr.Spans {
		if s.OperationName == name {
			return s
		}
	}
	return nil
}

func (tr jaegerTrace) service(s *jaegerSpan) string { return tr.Processes[s.ProcessID].ServiceName }

func (tr jaegerTrace) names() []string {
	var out []string
	for _, s := range tr.Spans {
		out = append(out, s.OperationName)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// census counts spans by name: "etcd Txn×12, pulumi.up×1...".
func (tr jaegerTrace) census() string {
	n := map[string]int{}
	for _, s := range tr.Spans {
		n[s.OperationName]++
	}
	var parts []string
	for _, name := range tr.names() {
		parts = append(parts, fmt.Sprintf("%s×%d", name, n[name]))
	}
	return strings.Join(parts, ", ")
}

func getTrace(jaeger, traceID string) (jaegerTrace, error) {
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := getJSONInto(jaeger+"/api/traces/"+traceID, &out); err != nil {
		return jaegerTrace{}, err
	}
	if len(out.Data) != 1 {
		return jaegerTrace{}, fmt.Errorf("%d traces", len(out.Data))
	}
	return out.Data[0], nil
}

// promQuery runs an instant query; the result maps each series' labels
// (`pool="true"`, "" for none) to its value.
func promQuery(base, q string) (map[string]float64, error) {
	var out struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := getJSONInto(base+"/api/v1/query?query="+url.QueryEscape(q), &out); err != nil {
		return nil, err
	}
	res := map[string]float64{}
	for _, r := range out.Data.Result {
		var labels []string
		for k, v := range r.Metric {
			if k != "__name__" {
				labels = append(labels, k+"="+strconv.Quote(v))
			}
		}
		sort.Strings(labels)
		v, _ := strconv.ParseFloat(fmt.Sprint(r.Value[1]), 64)
		res[strings.Join(labels, ",")] = v
	}
	return res, nil
}

// promRules maps each alerting rule Prometheus loaded to its state.
func promRules(base string) (map[string]string, error) {
	var out struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name  string `json:"name"`
					Type  string `json:"type"`
					State string `json:"state"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := getJSONInto(base+"/api/v1/rules", &out); err != nil {
		return nil, err
	}
	res := map[string]string{}
	for _, g := range out.Data.Groups {
		for _, r := range g.Rules {
			if r.Type == "alerting" {
				res[r.Name] = r.State
			}
		}
	}
	return res, nil
}

func getJSONInto(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %d %s", u, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, v)
}

func getOK(u string) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// findLogLine returns the first JSON log line of file whose msg is msg.
func findLogLine(t *testing.T, file, msg string) map[string]any {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			return m
		}
	}
	return nil
}
