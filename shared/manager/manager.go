// Package manager holds challfn's business rules: the semantics of the
// ChallengeStore and InstanceManager operations of the contract (docs/contract.md §4), the
// pool (§4.11), hot updates (§4.14) and expiry (§4.12, §5), on top of records
// and locks in etcd, scenarios from OCI and stacks driven by Pulumi.
//
// Work that may outlive a request — filling a pool slot, updating or deleting
// one instance — is expressed as an event (shared/events) and handled by
// HandleEvent, possibly in another function instance (docs/design.md, decision 4).
// Every handler is idempotent: it compares the event with the stored state.
package manager

import (
	"context"
	"log/slog"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/store"
)

// Engine is the Pulumi driver (shared/iac).
type Engine interface {
	Create(ctx context.Context, p iac.Program, identity string, additional map[string]string) (iac.Outputs, error)
	Update(ctx context.Context, old, new iac.Program, s iac.Strategy, identity string, additional map[string]string) (string, iac.Outputs, error)
	DestroyStack(ctx context.Context, project, identity string) error
}

// Scenarios resolves and serves scenarios (shared/scenario).
type Scenarios interface {
	Register(ctx context.Context, ref string, additional map[string]string) (*scenario.Scenario, error)
	Resolve(ctx context.Context, ref string) (string, error)
	Get(ctx context.Context, digest string) (*scenario.Scenario, error)
}

// Sender delivers events (shared/events). Nil means "run the work inline":
// the request that causes it waits for it (what upstream does).
type Sender interface {
	Send(ctx context.Context, e cloudevents.Event) error
}

// Options wires a Manager.
type Options struct {
	Store     *store.Store
	Locks     *lock.Locker
	Scenarios Scenarios
	Engine    Engine
	Events    Sender
	// Source is the CloudEvents source of the events this manager sends.
	Source string
	// UpdateWait bounds how long UpdateChallenge and DeleteChallenge wait for
	// the instance work they fanned out (0 = DefaultUpdateWait).
	UpdateWait time.Duration
	// Debug puts engine error summaries into API error messages.
	Debug bool
	// Limits bound what organisers may ask for (zero fields: the defaults).
	Limits api.Limits
	Log    *slog.Logger
	Now    func() time.Time
}

// DefaultUpdateWait keeps a PATCH/DELETE under the 600 s request timeout of
// Knative and of the CTFd plugin.
const DefaultUpdateWait = 540 * time.Second

// Manager implements the REST operations and the event handlers.
type Manager struct {
	o   Options
	log *slog.Logger
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.UpdateWait <= 0 {
		o.UpdateWait = DefaultUpdateWait
	}
	if o.Source == "" {
		o.Source = "//challfn/manager"
	}
	return &Manager{o: o, log: o.Log}
}

func (m *Manager) now() time.Time { return m.o.Now().UTC() }

// acquire takes a lock chain. Waiting for it honours ctx (a client that hangs
// up stops waiting), but once it is held, the work it protects must not be
// cut short by the client (docs/design.md, decision 5): acquire returns a context
// detached from ctx's cancellation, with ctx's values and trace, that keeps
// the lock's lease alive until Release.
func (m *Manager) acquire(ctx context.Context, c lock.Chain) (context.Context, *lock.Held, error) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	held, err := m.o.Locks.Acquire(work, c)
	if !stop() && err == nil {
		// ctx ended just as the lock was granted: give it back.
		_ = held.Release(work)
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		return ctx, nil, err
	}
	return work, held, nil
}
