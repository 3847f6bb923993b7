package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/expiry"
	"github.com/challfn/challfn/shared/pool"
)

// TestLoad is the load run of the reliability issue: players creating,
// retrieving, renewing and deleting instances concurrently across challenges
// with pools, two janitors firing on a schedule, and two processes per
// function (the real function mains, as in production) behind an entry
// address that queues requests like Knative's activator does
// (containerConcurrency of knative/base/services.yaml). It fails on any 5xx
// or transport error, on any lost or duplicated instance, and unless, at the
// end, records, backend stacks, the store's count and the `instances` gauge
// agree, every example-tcp service of a live instance answers with its flag
// and none of a deleted one does.
//
// The test command runs it small (CHALLFN_LOAD_* defaults); scripts/load.sh
// runs the figures: 200 players, 20 challenges, 5 minutes.
func TestLoad(t *testing.T) {
	p := loadParamsFromEnv(t)
	t.Logf("LOAD parameters: %d players, %d challenges, %s, janitors every %s", p.Players, p.Challenges, p.Duration, p.JanitorEvery)
	tmp := t.TempDir()
	env := testenv.Start(t, testenv.Options{Events: testenv.Inline})
	outputs, tcp := env.Scenario(t, "outputs"), env.Scenario(t, "example-tcp")

	otlp := &loadOTLP{}
	otlpSrv := httptest.NewServer(otlp)
	t.Cleanup(otlpSrv.Close)

	// The entry address; its groups are set once the processes run.
	stats := newLoadStats()
	router := &loadRouter{stats: stats}
	front := httptest.NewUnstartedServer(router)
	front.Config.ReadHeaderTimeout = 10 * time.Second
	front.Start()
	t.Cleanup(front.Close)

	common := functionEnv(env,
		"EVENTS_SINK_URL="+front.URL+"/broker",
		"OTEL_EXPORTER_OTLP_ENDPOINT="+otlpSrv.URL,
		"LOG_LEVEL=warn",
	)
	procs := map[string][]*monitoringFunction{}
	pids := map[int]string{}
	for _, target := range []string{"challenge", "instance", "janitor"} {
		for i := range 2 {
			name := fmt.Sprintf("%s-%d", target, i)
			f := startMonitoringFunction(t, tmp, target, append(slices.Clone(common), "CACHE_DIR="+filepath.Join(tmp, name+"-cache")))
			procs[target] = append(procs[target], f)
			pids[f.cmd.Process.Pid] = name
		}
	}
	urls := func(target string) (out []string) {
		for _, f := range procs[target] {
			out = append(out, f.URL)
		}
		return out
	}
	// containerConcurrency of knative/base/services.yaml.
	router.challenge = newLoadGroup("challenge", 4, urls("challenge")...)
	router.instance = newLoadGroup("instance", 200, urls("instance")...)
	broker := &events.Broker{Target: front.URL + instance.EventsPath, Workers: 20, Backoff: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	router.broker = broker
	t.Cleanup(broker.Close)

	mem := &loadMem{}
	memCtx, memStop := context.WithCancel(context.Background())
	memDone := make(chan struct{})
	go func() { mem.watch(memCtx, pids); close(memDone) }()
	t.Cleanup(func() { memStop(); <-memDone })

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 512}, Timeout: 15 * time.Minute}
	call := func(method, path, body string) (int, []byte) {
		var r io.Reader
		if body != "" {
			r = strings.NewReader(body)
		}
		req, _ := http.NewRequest(method, front.URL+path, r)
		resp, err := client.Do(req)
		if err != nil {
			return 0, []byte(err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}

	// Challenges: every fourth one deploys a real TCP service per instance;
	// timeouts short enough for the janitor to expire abandoned instances
	// during the run; pools of 1 to 3.
	type chall struct {
		ID       string
		TCP      bool
		Timeout  time.Duration
		Min, Max int
	}
	challs := make([]chall, p.Challenges)
	for i := range challs {
		c := chall{ID: fmt.Sprintf("load-%02d", i), TCP: i%4 == 3, Timeout: time.Duration(45+15*(i%4)) * time.Second, Min: 1 + i%3}
		if i%2 == 1 {
			// max caps claimed + pooled: once players hold that many, the
			// pool is not refilled (creates then deploy on demand).
			c.Max = c.Min + 3
		}
		ref := outputs
		if c.TCP {
			ref = tcp
		}
		body := fmt.Sprintf(`{"id":%q,"scenario":%q,"timeout":"%ds","min":%d,"max":%d}`, c.ID, ref, int(c.Timeout.Seconds()), c.Min, c.Max)
		if code, b := call("POST", "/api/v1/challenge", body); code != http.StatusOK {
			t.Fatalf("register %s: %d %s", c.ID, code, b)
		}
		challs[i] = c
	}
	isTCP := map[string]bool{}
	for _, c := range challs {
		isTCP[c.ID] = c.TCP
	}
	// The pools fill through events before the players come.
	loadPoll(t, "pools filled", 10*time.Minute, func() error {
		broker.Wait()
		for _, c := range challs {
			n, err := env.App.Store.PoolCounts(context.Background(), c.ID)
			if err != nil {
				return err
			}
			if n.Pooled < int64(c.Min) {
				return fmt.Errorf("%s: %d pooled, min %d", c.ID, n.Pooled, c.Min)
			}
		}
		return nil
	})
	setup := stats.table(time.Second)
	*stats = *newLoadStats()

	// The janitors: each its own scheduler, every JanitorEvery, out of step.
	stop := make(chan struct{})
	var bg sync.WaitGroup
	janitorTick := func(i int) {
		s, err := events.NewSender(procs["janitor"][i].URL, nil)
		if err != nil {
			t.Error(err)
			return
		}
		ev, _ := events.New(context.Background(), "//challfn/load/scheduler", events.TypeKnativePing, map[string]string{})
		start := time.Now()
		err = s.Send(context.Background(), ev)
		code := http.StatusOK
		if err != nil {
			code = http.StatusInternalServerError
			t.Logf("janitor-%d: %v", i, err)
		}
		stats.add("janitor tick", time.Since(start), code)
	}
	for i := range 2 {
		bg.Add(1)
		go func() {
			defer bg.Done()
			time.Sleep(time.Duration(i) * p.JanitorEvery / 2)
			tk := time.NewTicker(p.JanitorEvery)
			defer tk.Stop()
			for {
				janitorTick(i)
				select {
				case <-stop:
					return
				case <-tk.C:
				}
			}
		}()
	}

	// The players.
	ledger := newLoadLedger()
	start := time.Now()
	var players sync.WaitGroup
	for i := range p.Players {
		players.Add(1)
		go func() {
			defer players.Done()
			pl := &loadPlayer{id: fmt.Sprintf("player-%03d", i), call: call, ledger: ledger, isTCP: isTCP,
				rnd: mrand.New(mrand.NewPCG(uint64(i), 42)), abandoned: map[string]time.Time{}}
			ids := make([]string, len(challs))
			for j, c := range challs {
				ids[j] = c.ID
			}
			pl.play(ids, stop)
		}()
	}
	time.Sleep(p.Duration)
	close(stop)
	players.Wait()
	elapsed := time.Since(start)
	bg.Wait()
	broker.Wait()
	runTable := stats.table(elapsed)

	ctx := context.Background()
	// Settle: the janitors go on as they would in production until every
	// pool is back within its bounds (abandoned instances keep expiring, and
	// each expiry may call for a refill).
	settleStart, settleRuns := time.Now(), 0
	loadPoll(t, "pools back within their bounds", 5*time.Minute, func() error {
		janitorTick(settleRuns % 2)
		settleRuns++
		broker.Wait()
		for _, c := range challs {
			claimed, pooled, err := env.App.Store.Instances(ctx, c.ID)
			if err != nil {
				return err
			}
			if d := pool.NewDelta(int64(c.Min), int64(c.Max), int64(len(claimed)), int64(len(pooled))); d != (pool.Delta{}) {
				return fmt.Errorf("pool of %s (min %d, max %d): %d pooled, %d claimed; off by %+v", c.ID, c.Min, c.Max, len(pooled), len(claimed), d)
			}
		}
		return nil
	})
	settled := time.Since(settleStart)

	// No instance lost: every instance a player holds is served, with the
	// identity the player was given (or has expired: its until passed).
	lost := 0
	for key, h := range ledger.held() {
		cid, sid, _ := strings.Cut(key, "/")
		code, b := call("GET", "/api/v1/instance/"+cid+"/"+sid, "")
		switch {
		case code == http.StatusOK && loadIdentity(b) == h.Identity:
		case code == http.StatusNotFound && time.Now().After(h.Until):
		default:
			lost++
			t.Errorf("held instance %s (%s, until %s): %d %s", key, h.Identity, h.Until.Format(time.RFC3339), code, b)
		}
	}
	// Records, stacks, counts and gauge agree; no record nobody holds.
	recs := map[string]bool{}
	pools := map[string]int{}
	ghosts := 0
	heldNow := ledger.held()
	for _, c := range challs {
		claimed, pooled, err := env.App.Store.Instances(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		sc, err := env.App.Store.GetChallenge(ctx, c.ID)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range claimed {
			recs[in.Project+"/"+in.Identity] = true
			if h, ok := heldNow[c.ID+"/"+in.SourceID]; !ok || h.Identity != in.Identity {
				if u := expiry.Instance(in.LastRenew, sc.UpdatedAt, sc.Until, sc.Timeout); u == nil || u.After(time.Now()) {
					ghosts++
					t.Errorf("record %s/%s (%s) that no player holds", c.ID, in.SourceID, in.Identity)
				}
			}
		}
		for _, in := range pooled {
			recs[in.Project+"/"+in.Identity] = true
		}
		pools[c.ID] = len(pooled)
	}
	stacks := map[string]bool{}
	for _, s := range env.Stacks(t) {
		stacks[s] = true
	}
	counts, err := env.App.Store.Count(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for s := range stacks {
		if !recs[s] {
			t.Errorf("stack %s has no record (leaked)", s)
		}
	}
	for r := range recs {
		if !stacks[r] {
			t.Errorf("record %s has no stack", r)
		}
	}
	if int(counts.Instances) != len(recs) {
		t.Errorf("store count %d, %d records", counts.Instances, len(recs))
	}
	// The gauge: each janitor's export after a run must equal the store's
	// count read right after it. Abandoned instances still expire meanwhile
	// (and the counts are cached 15 s per process), so poll until the state
	// is still and the gauges caught up.
	var gauges map[string]loadGauge
	var gaugeCount int64
	loadPoll(t, "instances gauge = store count", 4*time.Minute, func() error {
		tick := time.Now()
		janitorTick(0)
		janitorTick(1)
		broker.Wait()
		n, err := env.App.Store.Count(ctx)
		if err != nil {
			return err
		}
		gaugeCount = n.Instances
		gauges = map[string]loadGauge{}
		for id, g := range otlp.since(tick) {
			if strings.HasSuffix(g.Service, "janitor") {
				gauges[id] = g
			}
		}
		if len(gauges) < 2 {
			return fmt.Errorf("%d janitor exports", len(gauges))
		}
		for _, g := range gauges {
			if g.Value != gaugeCount {
				time.Sleep(4 * time.Second)
				return fmt.Errorf("instances gauge of %s = %d, store count %d", g.Service, g.Value, gaugeCount)
			}
		}
		return nil
	})
	// Every live TCP instance's service answers with its flag.
	live := 0
	for _, c := range challs {
		if !c.TCP {
			continue
		}
		claimed, pooled, _ := env.App.Store.Instances(ctx, c.ID)
		for _, in := range append(claimed, pooled...) {
			live++
			if got := loadDialFlag(in.ConnectionInfo); !slices.Contains(in.Flags, got) {
				t.Errorf("service of %s/%s (%s): answered %q, want one of %q", c.ID, in.SourceID, in.ConnectionInfo, got, in.Flags)
			}
		}
	}

	// Teardown: deleting the challenges destroys everything.
	for _, c := range challs {
		if code, b := call("DELETE", "/api/v1/challenge/"+c.ID, ""); code != http.StatusOK {
			t.Errorf("delete %s: %d %s", c.ID, code, b)
		}
	}
	broker.Wait()
	janitorTick(0)
	broker.Wait()
	if s := env.Stacks(t); len(s) != 0 {
		t.Errorf("stacks left after the challenges were deleted: %v", s)
	}
	if k := loadKeys(t, env.Client, "/challfn/"); len(k) != 0 {
		t.Errorf("etcd keys left: %v", k)
	}
	if l := engineLocks(env.Dir); len(l) != 0 {
		t.Errorf("engine locks left: %v", l)
	}
	leaked := 0
	for _, svc := range ledger.services() {
		if got := loadDialFlag(svc.ConnectionInfo); got == svc.Flag {
			leaked++
			t.Errorf("service %s still answers %s after its instance was deleted", svc.ConnectionInfo, svc.Flag)
		}
	}

	n5xx, where := stats.fivexx()
	o := ledger.outcomes()
	t.Logf("LOAD setup (register %d challenges, fill their pools):\n%s", len(challs), setup)
	t.Logf("LOAD run: %s, %d players, %d challenges (%d with a TCP service), pools %v\n%s", elapsed.Round(time.Second), p.Players, len(challs), len(challs)/4, pools, runTable)
	t.Logf("LOAD settle: every pool within its bounds %s after the players stopped (%d janitor runs)", settled.Round(time.Second), settleRuns)
	t.Logf("LOAD outcomes: %d instances created (%d of them found again after a 409), %d deleted by their player, %d abandoned, %d found expired; anomalies: lost %d, duplicated %d, ghost records %d, unexpected answers %d",
		o.Created, o.Reused, o.Deleted, o.Abandoned, o.Expired, lost+o.Lost, o.Duplicated, ghosts, o.Unexpected)
	t.Logf("LOAD accounting at the end of the run: %d records = %d stacks = store count %d; instances gauge %v = store count %d read just after their export; %d TCP services of live instances answered; after teardown: %d stacks, %d services of deleted instances answering (of %d started)",
		len(recs), len(stacks), counts.Instances, loadGaugeValues(gauges), gaugeCount, live, len(env.Stacks(t)), leaked, len(ledger.services()))
	t.Logf("LOAD 5xx and transport errors: %d %v", n5xx, where)
	t.Logf("LOAD memory (sampled every 250 ms):\n%s", mem.report())
	if n5xx != 0 {
		t.Errorf("%d 5xx answers or transport errors: %v", n5xx, where)
	}
	if o.Lost+o.Duplicated+o.Unexpected != 0 {
		t.Errorf("anomalies: lost %d, duplicated %d, unexpected %d; first: %v", o.Lost, o.Duplicated, o.Unexpected, o.First)
	}
}

// loadParams are the load run's figures, from CHALLFN_LOAD_* (defaults: the
// small run of the test command).
type loadParams struct {
	Players, Challenges    int
	Duration, JanitorEvery time.Duration
}

func loadParamsFromEnv(t testing.TB) loadParams {
	p := loadParams{Players: 40, Challenges: 4, Duration: 30 * time.Second, JanitorEvery: 10 * time.Second}
	for name, dst := range map[string]*int{"CHALLFN_LOAD_PLAYERS": &p.Players, "CHALLFN_LOAD_CHALLENGES": &p.Challenges} {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				t.Fatalf("%s=%q: want a positive integer", name, v)
			}
			*dst = n
		}
	}
	for name, dst := range map[string]*time.Duration{"CHALLFN_LOAD_DURATION": &p.Duration, "CHALLFN_LOAD_JANITOR_EVERY": &p.JanitorEvery} {
		if v := os.Getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a positive duration", name, v)
			}
			*dst = d
		}
	}
	return p
}

// loadHeld is an instance a player holds.
type loadHeld struct {
	Identity string
	Until    time.Time
}

// loadService is the TCP service of an instance its player deleted.
type loadService struct{ ConnectionInfo, Flag string }

type loadOutcomes struct {
	Created, Reused, Deleted, Abandoned, Expired int
	Lost, Duplicated, Unexpected                 int
	First                                        []string
}

// loadLedger is what the players know: who holds what, which identity was
// ever given to whom.
type loadLedger struct {
	mu     sync.Mutex
	hold   map[string]loadHeld // challenge/source → instance
	owner  map[string]string   // identity → challenge/source it was given to
	gone   []loadService
	counts loadOutcomes
}

func newLoadLedger() *loadLedger {
	return &loadLedger{hold: map[string]loadHeld{}, owner: map[string]string{}}
}

func (l *loadLedger) anomaly(kind *int, format string, args ...any) {
	*kind++
	if len(l.counts.First) < 10 {
		l.counts.First = append(l.counts.First, fmt.Sprintf(format, args...))
	}
}

// got records an instance given to key; an identity given to another key
// before is a duplicate (identities are random and never reused).
func (l *loadLedger) got(key string, h loadHeld, reused bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if o, ok := l.owner[h.Identity]; ok && o != key {
		l.anomaly(&l.counts.Duplicated, "identity %s given to %s and %s", h.Identity, o, key)
	}
	l.owner[h.Identity] = key
	l.hold[key] = h
	if reused {
		l.counts.Reused++
	} else {
		l.counts.Created++
	}
}

func (l *loadLedger) renewed(key string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := l.hold[key]
	h.Until = until
	l.hold[key] = h
}

func (l *loadLedger) released(key string, how *int, svc *loadService) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.hold, key)
	*how++
	if svc != nil {
		l.gone = append(l.gone, *svc)
	}
}

func (l *loadLedger) held() map[string]loadHeld {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]loadHeld, len(l.hold))
	for k, v := range l.hold {
		out[k] = v
	}
	return out
}

func (l *loadLedger) services() []loadService {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.gone)
}

func (l *loadLedger) outcomes() loadOutcomes {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := l.counts
	o.First = slices.Clone(o.First)
	return o
}

func (l *loadLedger) count(field *int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	*field++
}

func (l *loadLedger) unexpected(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.anomaly(&l.counts.Unexpected, format, args...)
}

func (l *loadLedger) lost(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.anomaly(&l.counts.Lost, format, args...)
}

// loadPlayer plays like a CTFd user through the plugin: boot an instance,
// look at it now and then, renew it, and delete it or walk away.
type loadPlayer struct {
	id        string
	call      func(method, path, body string) (int, []byte)
	ledger    *loadLedger
	isTCP     map[string]bool
	rnd       *mrand.Rand
	abandoned map[string]time.Time // challenge → until of the instance left there
}

func (p *loadPlayer) think(stop <-chan struct{}, lo, hi time.Duration) bool {
	select {
	case <-stop:
		return false
	case <-time.After(lo + time.Duration(p.rnd.Int64N(int64(hi-lo)))):
		return true
	}
}

func (p *loadPlayer) play(challs []string, stop <-chan struct{}) {
	if !p.think(stop, 0, 3*time.Second) { // players do not all arrive at once
		return
	}
	for {
		cid := challs[p.rnd.IntN(len(challs))]
		if !p.session(cid, stop) {
			return
		}
		if !p.think(stop, 500*time.Millisecond, 3*time.Second) {
			return
		}
	}
}

// session is one instance's life; false when the run is over.
func (p *loadPlayer) session(cid string, stop <-chan struct{}) bool {
	l := p.ledger
	key := cid + "/" + p.id
	path := "/api/v1/instance/" + cid + "/" + p.id
	code, b := p.call("POST", "/api/v1/instance", fmt.Sprintf(`{"challengeId":%q,"sourceId":%q}`, cid, p.id))
	var h loadHeld
	switch {
	case code == http.StatusOK:
		h = loadHeld{Identity: loadIdentity(b), Until: loadUntil(b)}
		l.got(key, h, false)
	case code == http.StatusConflict:
		// The plugin then shows the existing instance: one left here before
		// whose until has not passed yet, or not swept yet.
		if _, ok := p.abandoned[cid]; !ok {
			l.unexpected("%s: create answered 409 with no instance left there: %s", key, b)
			return true
		}
		code, b = p.call("GET", path, "")
		if code == http.StatusNotFound {
			return true // swept meanwhile; try elsewhere
		}
		if code != http.StatusOK {
			l.unexpected("%s: get after 409: %d %s", key, code, b)
			return true
		}
		h = loadHeld{Identity: loadIdentity(b), Until: loadUntil(b)}
		l.got(key, h, true)
	default:
		if code/100 != 5 && code != 0 { // 5xx are counted by the router
			l.unexpected("%s: create: %d %s", key, code, b)
		}
		return true
	}
	delete(p.abandoned, cid)
	if h.Identity == "" {
		l.unexpected("%s: no identity in %s", key, b)
	}
	var svc *loadService
	if p.isTCP[cid] {
		var in struct {
			ConnectionInfo string `json:"connectionInfo"`
			Flag           string `json:"flag"`
		}
		_ = json.Unmarshal(b, &in)
		svc = &loadService{ConnectionInfo: in.ConnectionInfo, Flag: in.Flag}
		if got := loadDialFlag(in.ConnectionInfo); got != in.Flag {
			l.unexpected("%s: service %s answered %q, want %q", key, in.ConnectionInfo, got, in.Flag)
		}
	}
	// gone reports a 404 for an instance held: expired if its until passed
	// (the janitor's work), lost otherwise.
	gone := func(what string, code int, b []byte) {
		if time.Now().After(h.Until) {
			l.released(key, &l.counts.Expired, svc)
			return
		}
		l.lost("%s: %s answered %d before until %s: %s", key, what, code, h.Until.Format(time.RFC3339), b)
	}
	look := func() bool {
		code, b := p.call("GET", path, "")
		switch {
		case code == http.StatusOK && loadIdentity(b) == h.Identity:
			return true
		case code == http.StatusNotFound:
			gone("get", code, b)
		case code/100 != 5 && code != 0:
			l.unexpected("%s: get: %d %s (identity %s)", key, code, b, h.Identity)
		}
		return false
	}
	for range 1 + p.rnd.IntN(3) {
		if !p.think(stop, 300*time.Millisecond, 2*time.Second) {
			return false
		}
		if !look() {
			return true
		}
	}
	if p.rnd.IntN(5) == 0 {
		// The plugin's listing of a user's instances.
		code, b := p.call("GET", "/api/v1/instance?sourceId="+p.id, "")
		if code == http.StatusOK && !strings.Contains(string(b), h.Identity) && time.Now().Before(h.Until) {
			l.unexpected("%s: query by source misses %s: %s", key, h.Identity, b)
		}
	}
	if !p.think(stop, 300*time.Millisecond, 2*time.Second) {
		return false
	}
	code, b = p.call("PATCH", path, "{}")
	switch {
	case code == http.StatusOK:
		u := loadUntil(b)
		if !u.After(h.Until) && !u.Equal(h.Until) {
			l.unexpected("%s: renew moved until back: %s → %s", key, h.Until, u)
		}
		h.Until = u
		l.renewed(key, u)
	case code == http.StatusNotFound:
		gone("renew", code, b)
		return true
	case code == http.StatusBadRequest && strings.Contains(string(b), "INSTANCE_EXPIRED") && time.Now().After(h.Until):
		// Too late to renew: the janitor deletes it; the player moves on.
		p.abandoned[cid] = h.Until
		l.released(key, &l.counts.Expired, svc)
		return true
	case code/100 != 5 && code != 0:
		l.unexpected("%s: renew: %d %s", key, code, b)
	}
	if !p.think(stop, 300*time.Millisecond, 2*time.Second) {
		return false
	}
	if !look() {
		return true
	}
	if p.rnd.IntN(10) < 3 {
		// Walks away: the janitor deletes it at until.
		p.abandoned[cid] = h.Until
		l.count(&l.counts.Abandoned)
		return true
	}
	code, b = p.call("DELETE", path, "")
	switch {
	case code == http.StatusOK:
		l.released(key, &l.counts.Deleted, svc)
	case code == http.StatusNotFound:
		gone("delete", code, b)
	case code/100 != 5 && code != 0:
		l.unexpected("%s: delete: %d %s", key, code, b)
	}
	return true
}

var loadIdentityRE = regexp.MustCompile(`CTF\{([0-9a-f]{16})\}`)

// loadIdentity reads the identity from an instance's flags: both test
// scenarios' first flag is CTF{<identity>}.
func loadIdentity(b []byte) string {
	if m := loadIdentityRE.FindSubmatch(b); m != nil {
		return string(m[1])
	}
	return ""
}

func loadUntil(b []byte) time.Time {
	var in struct {
		Until time.Time `json:"until"`
	}
	_ = json.Unmarshal(b, &in)
	return in.Until
}

// loadDialFlag connects to "nc <host> <port>" and returns the first line.
func loadDialFlag(connectionInfo string) string {
	f := strings.Fields(connectionInfo)
	if len(f) != 3 {
		return ""
	}
	c, err := net.DialTimeout("tcp", net.JoinHostPort(f[1], f[2]), 2*time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

func loadPoll(t testing.TB, what string, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func loadKeys(t testing.TB, cli *clientv3.Client, prefix string) []string {
	t.Helper()
	resp, err := cli.Get(context.Background(), prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		// The janitor's bookkeeping and the schema marker stay.
		if strings.Contains(k, "/meta/") {
			continue
		}
		out = append(out, k)
	}
	return out
}

func loadGaugeValues(g map[string]loadGauge) []string {
	var out []string
	for _, v := range g {
		out = append(out, fmt.Sprintf("%s=%d", v.Service, v.Value))
	}
	sort.Strings(out)
	return out
}
