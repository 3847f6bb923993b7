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

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/lock"
)

// Options wires a Manager.
type Options struct {
	Records   Records
	Locks     Locks
	Scenarios Scenarios
	Engine    Engine
	// Events carries the asynchronous work (required).
	Events Sender
	// Source is the CloudEvents source of the events this manager sends.
	Source string
	// UpdateWait bounds how long UpdateChallenge and DeleteChallenge wait for
	// the instance work they fanned out (0 = config.DefaultDeployTimeout).
	UpdateWait time.Duration
	// Debug puts engine error summaries into API error messages.
	Debug bool
	// Limits bound what organisers may ask for (zero fields: the defaults).
	Limits api.Limits
	Log    *slog.Logger
	Now    func() time.Time
}

// Manager implements the REST operations and the event handlers.
type Manager struct {
	o   Options
	log *slog.Logger
	// recent saves the hot paths their read (recent.go).
	recent recent
}

// New returns a Manager.
func New(o Options) *Manager {
	if o.Events == nil {
		panic("manager: Options.Events is required")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.UpdateWait <= 0 {
		o.UpdateWait = config.DefaultDeployTimeout
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
func (m *Manager) acquire(ctx context.Context, c lock.Chain) (context.Context, Held, error) {
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
