package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"
)

// Helpers of the load run (load_test.go). Names start with "load".

// loadStats records the latency and status of every request by route.
type loadStats struct {
	mu     sync.Mutex
	routes map[string]*loadRoute
}

type loadRoute struct {
	lat    []time.Duration
	status map[int]int
	errs   int // transport errors (no answer)
}

func newLoadStats() *loadStats { return &loadStats{routes: map[string]*loadRoute{}} }

func (s *loadStats) add(route string, d time.Duration, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.routes[route]
	if r == nil {
		r = &loadRoute{status: map[int]int{}}
		s.routes[route] = r
	}
	r.lat = append(r.lat, d)
	if status == 0 {
		r.errs++
	} else {
		r.status[status]++
	}
}

// fivexx counts the 5xx answers and transport errors of every route.
func (s *loadStats) fivexx() (n int, where []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for name, r := range s.routes {
		bad := r.errs
		for st, c := range r.status {
			if st >= 500 {
				bad += c
			}
		}
		if bad > 0 {
			n += bad
			where = append(where, fmt.Sprintf("%s: %d", name, bad))
		}
	}
	sort.Strings(where)
	return n, where
}

// table is the per-route report: count, rate, p50, p99, max, statuses.
func (s *loadStats) table(elapsed time.Duration) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.routes))
	for n := range s.routes {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %7s %7s %9s %9s %9s  %s\n", "route", "count", "req/s", "p50", "p99", "max", "statuses")
	total := 0
	for _, n := range names {
		r := s.routes[n]
		lat := slices.Clone(r.lat)
		slices.Sort(lat)
		total += len(lat)
		var st []string
		for code, c := range r.status {
			st = append(st, fmt.Sprintf("%d×%d", code, c))
		}
		if r.errs > 0 {
			st = append(st, fmt.Sprintf("no-answer×%d", r.errs))
		}
		sort.Strings(st)
		fmt.Fprintf(&b, "%-34s %7d %7.2f %9s %9s %9s  %s\n", n, len(lat), float64(len(lat))/elapsed.Seconds(),
			quantile(lat, 0.50).Round(time.Millisecond), quantile(lat, 0.99).Round(time.Millisecond), quantile(lat, 1).Round(time.Millisecond), strings.Join(st, " "))
	}
	fmt.Fprintf(&b, "%-34s %7d %7.2f\n", "all", total, float64(total)/elapsed.Seconds())
	return b.String()
}

// loadGroup stands for one Knative Service: its processes behind the
// activator and queue-proxy, which hold a request until a process has a free
// slot (containerConcurrency) and give it to the least busy one.
type loadGroup struct {
	name     string
	limit    int
	backends []*loadBackend

	mu   sync.Mutex
	free *sync.Cond
}

type loadBackend struct {
	proxy    *httputil.ReverseProxy
	inflight int
}

func newLoadGroup(name string, limit int, urls ...string) *loadGroup {
	g := &loadGroup{name: name, limit: limit}
	g.free = sync.NewCond(&g.mu)
	for _, u := range urls {
		target, _ := url.Parse(u)
		p := httputil.NewSingleHostReverseProxy(target)
		p.Transport = &http.Transport{MaxIdleConnsPerHost: 256, ResponseHeaderTimeout: 15 * time.Minute}
		g.backends = append(g.backends, &loadBackend{proxy: p})
	}
	return g
}

func (g *loadGroup) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	var b *loadBackend
	for {
		for _, c := range g.backends {
			if c.inflight < g.limit && (b == nil || c.inflight < b.inflight) {
				b = c
			}
		}
		if b != nil {
			break
		}
		g.free.Wait()
	}
	b.inflight++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		b.inflight--
		g.mu.Unlock()
		g.free.Signal()
	}()
	b.proxy.ServeHTTP(w, r)
}

// loadRouter is the entry address (the HTTPRoute): it routes by path to the
// groups and records every answer, the broker's deliveries included.
type loadRouter struct {
	stats     *loadStats
	challenge *loadGroup
	instance  *loadGroup
	broker    http.Handler
}

func (rt *loadRouter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var h http.Handler
	switch p := r.URL.Path; {
	case p == "/broker":
		rt.broker.ServeHTTP(w, r)
		return
	case p == "/api/v1/challenge" || strings.HasPrefix(p, "/api/v1/challenge/"):
		h = rt.challenge
	case p == "/api/v1/instance" || strings.HasPrefix(p, "/api/v1/instance/") || p == "/events" || p == "/healthcheck":
		h = rt.instance
	default:
		http.NotFound(w, r)
		return
	}
	rec := &loadStatus{ResponseWriter: w, status: http.StatusOK}
	start := time.Now()
	h.ServeHTTP(rec, r)
	rt.stats.add(loadRouteName(r), time.Since(start), rec.status)
}

type loadStatus struct {
	http.ResponseWriter
	status int
}

func (s *loadStatus) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }
func (s *loadStatus) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// loadRouteName names a request by its route template.
func loadRouteName(r *http.Request) string {
	p := r.URL.Path
	switch {
	case p == "/events":
		return "event " + r.Header.Get("Ce-Type")
	case strings.HasPrefix(p, "/api/v1/instance/"):
		p = "/api/v1/instance/{challengeId}/{sourceId}"
	case strings.HasPrefix(p, "/api/v1/challenge/"):
		p = "/api/v1/challenge/{id}"
	}
	if r.URL.RawQuery != "" {
		p += "?sourceId"
	}
	return r.Method + " " + p
}

// loadOTLP is an OTLP/HTTP receiver that keeps, per exporting process
// (service.instance.id), the last exported value of the `instances` gauge
// summed over its series, and when it was received.
type loadOTLP struct {
	mu   sync.Mutex
	last map[string]loadGauge
}

type loadGauge struct {
	Service string
	Value   int64
	At      time.Time
}

func (o *loadOTLP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.URL.Path == "/v1/metrics" {
		var req colmetrics.ExportMetricsServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o.record(&req)
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
		_, _ = w.Write(out)
		return
	}
	w.WriteHeader(http.StatusOK) // traces: not looked at here
}

func (o *loadOTLP) record(req *colmetrics.ExportMetricsServiceRequest) {
	now := time.Now()
	for _, rm := range req.ResourceMetrics {
		var id, svc string
		for _, a := range rm.GetResource().GetAttributes() {
			switch a.Key {
			case "service.instance.id":
				id = a.GetValue().GetStringValue()
			case "service.name":
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name != "instances" {
					continue
				}
				var pts []*metricspb.NumberDataPoint
				if g := m.GetGauge(); g != nil {
					pts = g.DataPoints
				} else if s := m.GetSum(); s != nil {
					pts = s.DataPoints
				}
				var sum int64
				for _, p := range pts {
					sum += p.GetAsInt()
				}
				o.mu.Lock()
				if o.last == nil {
					o.last = map[string]loadGauge{}
				}
				o.last[id] = loadGauge{Service: svc, Value: sum, At: now}
				o.mu.Unlock()
			}
		}
	}
}

// since returns the last values received after t, by process.
func (o *loadOTLP) since(t time.Time) map[string]loadGauge {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := map[string]loadGauge{}
	for id, g := range o.last {
		if g.At.After(t) {
			out[id] = g
		}
	}
	return out
}

// loadMem samples the resident memory of function processes: each process
// alone, and with its descendants (the Pulumi engines it runs).
type loadMem struct {
	mu   sync.Mutex
	peak map[int]*loadPeak
}

type loadPeak struct {
	Name       string
	Self, Tree int64 // bytes
}

func (m *loadMem) watch(ctx context.Context, procs map[int]string) {
	m.peak = map[int]*loadPeak{}
	for pid, name := range procs {
		m.peak[pid] = &loadPeak{Name: name}
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		m.sample()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (m *loadMem) sample() {
	rss, parent := loadProcTable()
	m.mu.Lock()
	defer m.mu.Unlock()
	for pid, p := range m.peak {
		self := rss[pid]
		tree := int64(0)
		for q, r := range rss {
			for a := q; a > 1; a = parent[a] {
				if a == pid {
					tree += r
					break
				}
			}
		}
		p.Self = max(p.Self, self)
		p.Tree = max(p.Tree, tree)
	}
}

// loadProcTable reads every process's resident set and parent from /proc.
func loadProcTable() (rss map[int]int64, parent map[int]int) {
	rss, parent = map[int]int64{}, map[int]int{}
	ents, _ := os.ReadDir("/proc")
	page := int64(os.Getpagesize())
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// After the command's closing parenthesis: state ppid ... (field 4 is
		// ppid, field 24 rss in pages).
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 22 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		pages, _ := strconv.ParseInt(f[21], 10, 64)
		parent[pid] = ppid
		rss[pid] = pages * page
	}
	return rss, parent
}

func (m *loadMem) report() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lines []string
	for pid, p := range m.peak {
		lines = append(lines, fmt.Sprintf("%-20s pid %-7d peak RSS %6.1f MiB alone, %7.1f MiB with its engine processes",
			p.Name, pid, float64(p.Self)/(1<<20), float64(p.Tree)/(1<<20)))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
