package manager_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/identity"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/memstore"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
)

// The unit tier of the manager: its rules on shared/memstore (records and
// locks in memory, conformant with etcd's) with an engine, scenarios and an
// event sink faked in memory. The integration tier (e2e) runs the same rules
// on etcd, the real Pulumi engine and HTTP.

// fakeEngine keeps stacks as a map: project/identity → the additional values
// deployed. Outputs derive from the identity, as scenarios/outputs does.
type fakeEngine struct {
	mu     sync.Mutex
	stacks map[string]map[string]string
	// fail, when it returns an error for an operation ("create", "update",
	// "destroy") on an identity, makes that operation fail.
	fail func(op, identity string, additional map[string]string) error
	ops  []string
}

func newFakeEngine() *fakeEngine { return &fakeEngine{stacks: map[string]map[string]string{}} }

func outputsOf(identity string, additional map[string]string) iac.Outputs {
	return iac.Outputs{ConnectionInfo: "nc " + identity + " " + additional["k"], Flags: []string{"CTF{" + identity + "}"}}
}

func (e *fakeEngine) check(op, identity string, additional map[string]string) error {
	e.ops = append(e.ops, op+" "+identity)
	if e.fail != nil {
		if err := e.fail(op, identity, additional); err != nil {
			return &iac.OpError{Op: op, Summary: err.Error(), Err: err}
		}
	}
	return nil
}

func (e *fakeEngine) Create(_ context.Context, p iac.Program, id string, additional map[string]string) (iac.Outputs, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("create", id, additional); err != nil {
		return iac.Outputs{}, err
	}
	e.stacks[p.Project+"/"+id] = maps.Clone(additional)
	return outputsOf(id, additional), nil
}

func (e *fakeEngine) Update(_ context.Context, old, new iac.Program, s iac.Strategy, id string, additional map[string]string) (string, iac.Outputs, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("update", id, additional); err != nil {
		return id, iac.Outputs{}, err
	}
	e.ops[len(e.ops)-1] += " " + string(s)
	newID := id
	if s == iac.BlueGreen {
		newID = identity.New()
	}
	delete(e.stacks, old.Project+"/"+id)
	e.stacks[new.Project+"/"+newID] = maps.Clone(additional)
	return newID, outputsOf(newID, additional), nil
}

func (e *fakeEngine) DestroyStack(_ context.Context, project, id string) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.check("destroy", id, nil); err != nil {
		return err
	}
	delete(e.stacks, project+"/"+id)
	return nil
}

// ListStacks makes the fake a janitor's StackLister.
func (e *fakeEngine) ListStacks(context.Context) ([]iac.StackRef, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []iac.StackRef
	for k := range e.stacks {
		p, id, _ := strings.Cut(k, "/")
		out = append(out, iac.StackRef{Project: p, Identity: id})
	}
	return out, nil
}

func (e *fakeEngine) identities() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var ids []string
	for k := range e.stacks {
		_, id, _ := strings.Cut(k, "/")
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// fakeScenarios resolves a reference to a digest of its text; a reference
// containing "bad" fails its preview.
type fakeScenarios struct{}

func digestOf(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return "sha256:" + hex.EncodeToString(sum[:])
}

func (fakeScenarios) Resolve(_ context.Context, ref string) (string, error) {
	return digestOf(ref), nil
}

func (fakeScenarios) Register(_ context.Context, ref string, _ map[string]string) (*scenario.Scenario, error) {
	if strings.Contains(ref, "bad") {
		return nil, &scenario.Error{Kind: scenario.KindSpec, Ref: ref, Detail: "preview failed: program failed"}
	}
	return &scenario.Scenario{Ref: ref, Digest: digestOf(ref), Program: iac.Program{Project: "p"}}, nil
}

func (fakeScenarios) Get(_ context.Context, digest string) (*scenario.Scenario, error) {
	return &scenario.Scenario{Digest: digest, Program: iac.Program{Project: "p"}}, nil
}

// queue is an event sink that delivers in the background to the manager,
// retrying transient failures a few times like a broker; wait blocks until
// it is idle.
type queue struct {
	m       *manager.Manager
	mu      sync.Mutex
	pending int
	idle    *sync.Cond
	sent    map[string]int // by type
	holding bool
	held    []cloudevents.Event
}

func (q *queue) Send(_ context.Context, e cloudevents.Event) error {
	q.mu.Lock()
	q.pending++
	q.sent[e.Type()]++
	if q.holding {
		q.held = append(q.held, e)
		q.mu.Unlock()
		return nil
	}
	q.mu.Unlock()
	q.deliver(e)
	return nil
}

// hold keeps the events sent from now on until release delivers them, the
// last sent first (a broker that delivers late and out of order).
func (q *queue) hold() { q.mu.Lock(); q.holding = true; q.mu.Unlock() }

func (q *queue) heldCount() int { q.mu.Lock(); defer q.mu.Unlock(); return len(q.held) }

func (q *queue) releaseReversed() {
	q.mu.Lock()
	held := q.held
	q.held, q.holding = nil, false
	q.mu.Unlock()
	for i := len(held) - 1; i >= 0; i-- {
		q.deliver(held[i])
		time.Sleep(20 * time.Millisecond) // in this order
	}
}

func (q *queue) deliver(e cloudevents.Event) {
	go func() {
		defer func() {
			q.mu.Lock()
			q.pending--
			q.idle.Broadcast()
			q.mu.Unlock()
		}()
		for attempt := 0; attempt < 3; attempt++ {
			err := q.m.HandleEvent(context.Background(), e)
			if err == nil || errorsIsPermanent(err) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
}

func errorsIsPermanent(err error) bool {
	return strings.Contains(fmt.Sprint(events.Result(err)), "400")
}

func (q *queue) wait() {
	q.mu.Lock()
	for q.pending > 0 {
		q.idle.Wait()
	}
	q.mu.Unlock()
}

func (q *queue) count(typ string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.sent[typ]
}

// logs collects the manager's log lines (the JSON of the functions).
type logs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logs) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logs) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// world is one manager on memory with its fakes and a settable clock.
type world struct {
	m      *manager.Manager
	st     *memstore.Store
	engine *fakeEngine
	events *queue
	logs   *logs
	mu     sync.Mutex
	now    time.Time
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{st: memstore.New(), engine: newFakeEngine(), logs: &logs{}, now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	w.events = &queue{sent: map[string]int{}}
	w.events.idle = sync.NewCond(&w.events.mu)
	w.m = manager.New(manager.Options{
		Records:   w.st,
		Locks:     w.st,
		Scenarios: fakeScenarios{},
		Engine:    w.engine,
		Events:    w.events,
		Log:       w.logger(),
		Now:       w.clock,
	})
	w.events.m = w.m
	t.Cleanup(w.events.wait)
	return w
}

func (w *world) clock() time.Time { w.mu.Lock(); defer w.mu.Unlock(); return w.now }

func (w *world) advance(d time.Duration) { w.mu.Lock(); w.now = w.now.Add(d); w.mu.Unlock() }

func (w *world) logger() *slog.Logger {
	return slog.New(telemetry.NewLogHandler(w.logs, telemetry.LogOptions{Level: slog.LevelDebug}))
}

// newManagerOn is another manager of w's world on other records.
func newManagerOn(w *world, r manager.Records) *manager.Manager {
	return manager.New(manager.Options{Records: r, Locks: w.st, Scenarios: fakeScenarios{}, Engine: w.engine,
		Events: w.events, Log: w.logger(), Now: w.clock})
}

func (c *conflicting) Under(h manager.Held) manager.Writes {
	return conflictingWrites{c.Store.Under(h)}
}

type conflictingWrites struct{ manager.Writes }

func (conflictingWrites) UpdateChallenge(context.Context, *store.Challenge, []*store.Instance) error {
	return fmt.Errorf("%w: challenge", store.ErrConflict)
}
