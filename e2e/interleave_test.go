package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
)

// TestInterleavings runs players, organisers, the janitor and process kills
// against each other at random, then checks what must hold whatever the
// interleaving (issue "One instance, one truth"):
//
//   - a record exists exactly when its stack exists; counts agree; nothing
//     lease-bound or locked is left;
//   - no 5xx answer but those a kill explains;
//   - the last acknowledged player operation of every (challenge, source)
//     is what the API answers at the end (a deleted instance stays deleted,
//     a created or renewed one is there unless expiry or its challenge's
//     deletion explains its absence);
//   - an acknowledged blue-green update gave every instance it updated a
//     new identity, and an in-place or recreate one kept it, also when
//     until/timeout/min/max updates ran meanwhile.
//
// Seeded and reproducible: CHALLFN_INTERLEAVE_SEED (default 1),
// CHALLFN_INTERLEAVE_OPS (default 120), CHALLFN_INTERLEAVE_WORKERS (6),
// CHALLFN_INTERLEAVE_KILLS (2). scripts/interleave.sh runs long ones.
func TestInterleavings(t *testing.T) {
	seed := ilEnvInt("CHALLFN_INTERLEAVE_SEED", 1)
	ops := ilEnvInt("CHALLFN_INTERLEAVE_OPS", 120)
	workers := ilEnvInt("CHALLFN_INTERLEAVE_WORKERS", 6)
	kills := ilEnvInt("CHALLFN_INTERLEAVE_KILLS", 2)
	t.Logf("seed %d, %d operations, %d workers, %d kills", seed, ops, workers, kills)

	srv := etcdtest.Server(t)
	s := fltSetup(t, srv.Endpoints())
	s.Env = map[string]string{"LOCK_TTL": "5s", "JANITOR_ORPHAN_GRACE": "3s"}
	ref := fltPush(t, s, "outputs")
	il := &ilRun{t: t, s: s, seed: uint64(seed), start: time.Now()}
	il.procs = []*fltProc{fltStart(t, s, nil), fltStart(t, s, nil)}
	for _, cid := range ilChallenges {
		il.mustOK("register "+cid, "POST", "/api/v1/challenge", ilChallengeBody(cid, ref))
	}
	il.ref = ref

	var done atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(seed), uint64(w)))
			for done.Add(1) <= int64(ops) {
				il.step(rng)
			}
		})
	}
	if kills > 0 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(seed), 999))
			for k := range kills {
				for done.Load() < int64(ops*(k+1)/(kills+1)) {
					time.Sleep(50 * time.Millisecond)
				}
				il.kill(rng.IntN(len(il.procs)))
			}
		})
	}
	wg.Wait()
	il.settle()
	il.check()
	il.report()
}

var ilChallenges = []string{"i0", "i1"}

const ilSources = 5

func ilChallengeBody(cid, ref string) string {
	return `{"id":"` + cid + `","scenario":"` + ref + `","timeout":"20s","additional":{"v":"0"},"min":1,"max":6}`
}

func ilEnvInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// ilRun is one run: the processes, what was acknowledged, what went wrong.
type ilRun struct {
	t     *testing.T
	s     *fltShared
	seed  uint64
	ref   string
	start time.Time

	mu         sync.Mutex
	procs      []*fltProc
	killedAt   []time.Time
	keys       map[string]*sync.Mutex // player operations on one (challenge, source) run one at a time
	last       map[string]ilAck       // last acknowledged player operation per (challenge, source)
	patches    []ilPatch              // acknowledged challenge updates
	gens       []ilSpan               // spans of updates that changed additional (new generations)
	expiring   []ilSpan               // spans of updates of until/timeout
	recreated  map[string][]time.Time // challenge deletions (acknowledged or not) per challenge
	janitorAt  time.Time              // start of the last janitor run
	violations []string
	stats      map[string]*ilStat
}

type ilAck struct {
	op    string // create, renew, delete
	at    time.Time
	until *time.Time
}

type ilSpan struct {
	cid        string
	start, end time.Time
}

type ilPatch struct {
	ilSpan
	strategy  string
	newGen    bool
	pre, post map[string]ilInst // source → instance, around the update
}

type ilInst struct {
	since, identity string
}

type ilStat struct {
	n        int
	statuses map[int]int
	lat      []time.Duration
}

func (il *ilRun) violate(format string, args ...any) {
	il.mu.Lock()
	defer il.mu.Unlock()
	il.violations = append(il.violations, fmt.Sprintf(format, args...))
}

// proc picks a live process (one being restarted is skipped, as a load
// balancer would).
func (il *ilRun) proc(rng *rand.Rand) *fltProc {
	il.mu.Lock()
	defer il.mu.Unlock()
	var live []*fltProc
	for _, p := range il.procs {
		if p != nil {
			live = append(live, p)
		}
	}
	return live[rng.IntN(len(live))]
}

// kill is kill -9 of process i (and its engines), then a restart.
func (il *ilRun) kill(i int) {
	il.mu.Lock()
	p := il.procs[i]
	il.procs[i] = nil
	il.killedAt = append(il.killedAt, time.Now())
	il.mu.Unlock()
	p.Kill()
	np := fltStart(il.t, il.s, nil)
	il.mu.Lock()
	il.procs[i] = np
	il.mu.Unlock()
	il.t.Logf("killed process %d at %s", i, time.Since(il.start).Round(time.Millisecond))
}

// injected reports whether a kill can explain a failure of a request that
// ran from start to end: one during it, or one recent enough for the lost
// locks of the dead process to matter.
func (il *ilRun) injected(start, end time.Time) bool {
	il.mu.Lock()
	defer il.mu.Unlock()
	for _, k := range il.killedAt {
		if !k.Before(start.Add(-15*time.Second)) && !k.After(end) {
			return true
		}
	}
	return false
}

// do sends one request and judges its status: what it returns is only what
// counts as acknowledged (2xx), or the status of an expected refusal.
func (il *ilRun) do(rng *rand.Rand, kind, method, path, body string) (int, []byte, bool) {
	p := il.proc(rng)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	r := send(ctx, p.URL, method, path, body)
	end := time.Now()
	il.mu.Lock()
	if il.stats == nil {
		il.stats = map[string]*ilStat{}
	}
	st := il.stats[kind]
	if st == nil {
		st = &ilStat{statuses: map[int]int{}}
		il.stats[kind] = st
	}
	st.n++
	st.statuses[r.Status]++
	st.lat = append(st.lat, end.Sub(start))
	il.mu.Unlock()
	switch {
	case r.Err != nil || r.Status >= 500:
		if !il.injected(start, end) {
			il.violate("%s %s %s: %d %v %s (no kill explains it)", kind, method, path, r.Status, r.Err, fltTail(string(r.Body), 400))
		}
		return r.Status, r.Body, false
	case r.Status >= 400 && r.Status != 400 && r.Status != 404 && r.Status != 409:
		il.violate("%s %s %s: unexpected %d %s", kind, method, path, r.Status, r.Body)
	}
	return r.Status, r.Body, r.Status/100 == 2
}

func (il *ilRun) mustOK(what, method, path, body string) []byte {
	r := send(context.Background(), il.procs[0].URL, method, path, body)
	if r.Err != nil || r.Status != 200 {
		il.t.Fatalf("%s: %d %v %s", what, r.Status, r.Err, r.Body)
	}
	return r.Body
}

func (il *ilRun) keyLock(key string) *sync.Mutex {
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.keys == nil {
		il.keys = map[string]*sync.Mutex{}
	}
	if il.keys[key] == nil {
		il.keys[key] = &sync.Mutex{}
	}
	return il.keys[key]
}

func (il *ilRun) ack(key string, a ilAck) {
	il.mu.Lock()
	defer il.mu.Unlock()
	if il.last == nil {
		il.last = map[string]ilAck{}
	}
	il.last[key] = a
}

// step runs one random operation.
func (il *ilRun) step(rng *rand.Rand) {
	cid := ilChallenges[rng.IntN(len(ilChallenges))]
	switch n := rng.IntN(100); {
	case n < 55:
		il.player(rng, cid, fmt.Sprintf("s%d", rng.IntN(ilSources)))
	case n < 85:
		il.patch(rng, cid)
	case n < 90:
		il.recreate(rng, cid)
	default:
		il.janitor(rng)
	}
}

func (il *ilRun) player(rng *rand.Rand, cid, sid string) {
	key := cid + "/" + sid
	l := il.keyLock(key)
	l.Lock()
	defer l.Unlock()
	path := "/api/v1/instance/" + cid + "/" + sid
	start := time.Now()
	switch n := rng.IntN(100); {
	case n < 35:
		if _, b, ok := il.do(rng, "create", "POST", "/api/v1/instance", `{"challengeId":"`+cid+`","sourceId":"`+sid+`"}`); ok {
			il.ack(key, ilAck{"create", start, ilUntil(b)})
		}
	case n < 55:
		if _, b, ok := il.do(rng, "renew", "PATCH", path, `{}`); ok {
			il.ack(key, ilAck{"renew", start, ilUntil(b)})
		}
	case n < 75:
		if _, _, ok := il.do(rng, "delete", "DELETE", path, ""); ok {
			il.ack(key, ilAck{"delete", start, nil})
		}
	case n < 90:
		il.do(rng, "retrieve", "GET", path, "")
	default:
		il.do(rng, "query", "GET", "/api/v1/instance?sourceId="+sid, "")
	}
}

// patch sends a challenge update with a random mask and strategy; updates
// of additional always change it (a new generation).
func (il *ilRun) patch(rng *rand.Rand, cid string) {
	strategy := []string{"update_in_place", "blue_green", "recreate"}[rng.IntN(3)]
	var mask []string
	fields := map[string]any{}
	for _, f := range []string{"additional", "until", "timeout", "min", "max"} {
		if rng.IntN(3) == 0 {
			mask = append(mask, f)
		}
	}
	if len(mask) == 0 {
		mask = []string{"until"}
	}
	for _, f := range mask {
		switch f {
		case "additional":
			fields["additional"] = map[string]string{"v": strconv.FormatUint(rng.Uint64(), 36)}
		case "until":
			if rng.IntN(4) > 0 { // else: reset (no until)
				fields["until"] = time.Now().Add(time.Duration(30+rng.IntN(600)) * time.Second).UTC().Format(time.RFC3339)
			}
		case "timeout":
			if rng.IntN(4) > 0 {
				fields["timeout"] = fmt.Sprintf("%ds", 5+rng.IntN(40))
			}
		case "min":
			fields["min"] = rng.IntN(3)
		case "max":
			fields["max"] = []int{0, 3, 6}[rng.IntN(3)]
		}
	}
	if min, ok := fields["min"].(int); ok {
		if max, ok := fields["max"].(int); ok && max > 0 && min > max {
			fields["min"] = max
		}
	}
	fields["updateMask"] = strings.Join(mask, ",")
	fields["updateStrategy"] = strategy
	body, _ := json.Marshal(fields)

	p := ilPatch{ilSpan: ilSpan{cid: cid, start: time.Now()}, strategy: strategy, newGen: slices.Contains(mask, "additional")}
	_, pre, _ := il.do(rng, "retrieve challenge", "GET", "/api/v1/challenge/"+cid, "")
	p.pre = ilInstances(pre)
	_, _, ok := il.do(rng, "update", "PATCH", "/api/v1/challenge/"+cid, string(body))
	_, post, _ := il.do(rng, "retrieve challenge", "GET", "/api/v1/challenge/"+cid, "")
	p.post = ilInstances(post)
	p.end = time.Now()
	il.mu.Lock()
	defer il.mu.Unlock()
	if p.newGen {
		il.gens = append(il.gens, p.ilSpan)
	}
	if slices.Contains(mask, "until") || slices.Contains(mask, "timeout") {
		il.expiring = append(il.expiring, p.ilSpan)
	}
	if ok {
		il.patches = append(il.patches, p)
	}
}

// recreate deletes a challenge and registers it again.
func (il *ilRun) recreate(rng *rand.Rand, cid string) {
	il.mu.Lock()
	if il.recreated == nil {
		il.recreated = map[string][]time.Time{}
	}
	il.recreated[cid] = append(il.recreated[cid], time.Now())
	il.mu.Unlock()
	il.do(rng, "delete challenge", "DELETE", "/api/v1/challenge/"+cid, "")
	il.do(rng, "create challenge", "POST", "/api/v1/challenge", ilChallengeBody(cid, il.ref))
}

func (il *ilRun) janitor(rng *rand.Rand) {
	il.mu.Lock()
	il.janitorAt = time.Now()
	il.mu.Unlock()
	p := il.proc(rng)
	start := time.Now()
	r := ilJanitor(p)
	if (r.Err != nil || r.Status/100 != 2) && !il.injected(start, time.Now()) {
		il.violate("janitor: %d %v %s", r.Status, r.Err, r.Body)
	}
}

func ilJanitor(p *fltProc) reply {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return send(ctx, p.URL, "POST", "/janitor", "{}",
		"Ce-Specversion: 1.0", "Ce-Id: "+fmt.Sprint(time.Now().UnixNano()), "Ce-Source: //challfn/test/scheduler",
		"Ce-Type: dev.knative.sources.ping", "Content-Type: application/json")
}

// ilLockStale is how old an engine lock without a stack must be before the
// janitor sweeps it (DEPLOY_TIMEOUT 8 s + the engine's 10 s kill grace): an
// engine killed during `stack init` leaves one, and a live `stack init` may
// be writing a younger one, so the sweep cannot take it sooner.
const ilLockStale = 18 * time.Second

// settle lets the system come to rest: the work in flight finishes, the
// janitor repairs what the kills left (its grace is 3 s: runs spaced by
// more), and at least one run comes after the last kill's locks are stale.
func (il *ilRun) settle() {
	deadline := time.Now().Add(3 * time.Minute)
	busy := func() bool {
		return len(fltKeys(il.t, il.s, "lock/i/"))+len(fltKeys(il.t, il.s, "pending/")) > 0
	}
	for time.Now().Before(deadline) && busy() {
		time.Sleep(200 * time.Millisecond)
	}
	il.mu.Lock()
	var stale time.Time
	if n := len(il.killedAt); n > 0 {
		stale = il.killedAt[n-1].Add(ilLockStale + time.Second)
	}
	il.mu.Unlock()
	for runs := 1; time.Now().Before(deadline); runs++ {
		ranAt := time.Now()
		r := ilJanitor(il.procs[0])
		if r.Err != nil || r.Status/100 != 2 {
			il.violate("settling janitor: %d %v %s", r.Status, r.Err, r.Body)
		}
		if runs >= 4 && !ranAt.Before(stale) {
			break
		}
		time.Sleep(3500 * time.Millisecond)
		for time.Now().Before(deadline) && busy() {
			time.Sleep(200 * time.Millisecond)
		}
	}
}

var ilIdentity = regexp.MustCompile(`^nc ([0-9a-f]{16})\.outputs\.local 1337$`)

func ilInstances(body []byte) map[string]ilInst {
	var c struct {
		Instances []struct{ SourceID, Since, ConnectionInfo string }
	}
	out := map[string]ilInst{}
	if json.Unmarshal(body, &c) != nil {
		return out
	}
	for _, in := range c.Instances {
		if m := ilIdentity.FindStringSubmatch(in.ConnectionInfo); m != nil {
			out[in.SourceID] = ilInst{in.Since, m[1]}
		}
	}
	return out
}

func ilUntil(body []byte) *time.Time {
	var in struct{ Until string }
	if json.Unmarshal(body, &in) != nil || in.Until == "" {
		return nil
	}
	u, err := time.Parse(time.RFC3339Nano, in.Until)
	if err != nil {
		return nil
	}
	return &u
}

func overlaps(spans []ilSpan, cid string, start, end time.Time, self ilSpan) bool {
	for _, s := range spans {
		if s != self && s.cid == cid && s.start.Before(end) && s.end.After(start) {
			return true
		}
	}
	return false
}

func (il *ilRun) check() {
	t := il.t
	// Records = stacks = counts, nothing held.
	recs, stacks := fltRecords(t, il.s), fltStacks(t, il.s)
	if !slices.Equal(recs, stacks) {
		il.violate("records %v ≠ stacks %v", recs, stacks)
	}
	n, err := il.s.Store.Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if int(n.Instances) != len(recs) {
		il.violate("instances count %d, %d records", n.Instances, len(recs))
	}
	for _, sub := range []string{"resv/", "pending/", "lock/c/", "lock/i/"} {
		if k := fltKeys(t, il.s, sub); len(k) != 0 {
			il.violate("left under %s: %v", sub, k)
		}
	}
	if l := fltPulumiLocks(il.s); len(l) != 0 {
		il.violate("engine stack locks left: %v", l)
	}

	// Acknowledged player operations.
	for key, a := range il.last {
		cid, sid, _ := strings.Cut(key, "/")
		r := send(context.Background(), il.procs[0].URL, "GET", "/api/v1/instance/"+cid+"/"+sid, "")
		switch {
		case a.op == "delete" && r.Status != 404:
			il.violate("%s: deleted at %s, GET answers %d %s", key, a.at.Format(time.StampMilli), r.Status, r.Body)
		case a.op != "delete" && r.Status != 200:
			excused := slices.ContainsFunc(il.recreated[cid], func(d time.Time) bool { return d.After(a.at) }) ||
				slices.ContainsFunc(il.expiring, func(s ilSpan) bool { return s.cid == cid && s.end.After(a.at) }) ||
				a.until != nil && a.until.Before(il.janitorAt.Add(30*time.Second))
			if !excused {
				il.violate("%s: %s at %s (until %v), GET answers %d %s", key, a.op, a.at.Format(time.StampMilli), a.until, r.Status, r.Body)
			}
		}
	}

	// Strategies of acknowledged updates.
	for _, p := range il.patches {
		if !p.newGen || overlaps(il.gens, p.cid, p.start, p.end, p.ilSpan) ||
			slices.ContainsFunc(il.recreated[p.cid], func(d time.Time) bool { return d.After(p.start) && d.Before(p.end) }) {
			continue
		}
		for sid, before := range p.pre {
			after, ok := p.post[sid]
			if !ok || after.since != before.since {
				continue // deleted or re-created meanwhile
			}
			if changed := after.identity != before.identity; changed != (p.strategy == "blue_green") {
				il.violate("%s/%s: %s update (%s → %s) took identity %s to %s", p.cid, sid, p.strategy,
					p.start.Format(time.StampMilli), p.end.Format(time.StampMilli), before.identity, after.identity)
			}
		}
	}
}

func (il *ilRun) report() {
	t := il.t
	elapsed := time.Since(il.start)
	total := 0
	var kinds []string
	for k, st := range il.stats {
		total += st.n
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	var lines []string
	for _, k := range kinds {
		st := il.stats[k]
		slices.SortFunc(st.lat, cmp.Compare)
		p99 := st.lat[min(len(st.lat)-1, len(st.lat)*99/100)]
		lines = append(lines, fmt.Sprintf("%s n=%d p50=%s p99=%s statuses=%v", k, st.n, st.lat[len(st.lat)/2].Round(time.Millisecond), p99.Round(time.Millisecond), st.statuses))
	}
	t.Logf("FIGURES interleave seed=%d: %d requests in %s (%.1f/s), %d kills, %d violations\n  %s",
		il.seed, total, elapsed.Round(time.Second), float64(total)/elapsed.Seconds(), len(il.killedAt), len(il.violations), strings.Join(lines, "\n  "))
	for _, v := range il.violations {
		t.Errorf("violation: %s", v)
	}
}
