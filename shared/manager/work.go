package manager

import (
	"context"
	"errors"
	"fmt"
	"sync"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/telemetry"
)

// workItem is one unit of asynchronous instance work, as an event.
type workItem struct {
	typ  string
	data any
}

func fillWork(challengeID string) workItem {
	return workItem{events.TypePoolFill, events.PoolFill{ChallengeID: challengeID}}
}

func updateWork(challengeID, identity string) workItem {
	return workItem{events.TypeInstanceUpdate, events.InstanceUpdate{ChallengeID: challengeID, Identity: identity}}
}

func deleteWork(challengeID, identity string, reason events.DeleteReason) workItem {
	return workItem{events.TypeInstanceDelete, events.InstanceDelete{ChallengeID: challengeID, Identity: identity, Reason: reason}}
}

// inlineParallelism bounds the work run inside a request when no event sink is
// configured.
const inlineParallelism = 8

// dispatch hands work to the event sink, one event per item. Without a sink
// (a single-process setup) updates and deletions run here, in parallel, and
// dispatch returns when they are done — the request that caused them waits, as
// upstream does; pool fills are then left to the janitor, because a response
// must never wait for the pool.
func (m *Manager) dispatch(ctx context.Context, work []workItem) {
	if len(work) == 0 {
		return
	}
	if m.o.Events == nil {
		sem := make(chan struct{}, inlineParallelism)
		var wg sync.WaitGroup
		for _, w := range work {
			if w.typ == events.TypePoolFill {
				continue
			}
			e, err := events.New(ctx, m.o.Source, w.typ, w.data)
			if err != nil {
				m.log.ErrorContext(ctx, "building event", "type", w.typ, "error", err)
				continue
			}
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				// HandleEvent logs its failures; the waiting request reads the outcome
				// from the records.
				_ = m.HandleEvent(context.WithoutCancel(ctx), e)
			}()
		}
		wg.Wait()
		return
	}
	for _, w := range work {
		e, err := events.New(ctx, m.o.Source, w.typ, w.data)
		if err == nil {
			err = m.o.Events.Send(ctx, e)
		}
		if err != nil {
			// The janitor reconciles what an event missed (pools, expiries,
			// deletions of deleting challenges); updates are retried by the
			// client re-sending its PATCH.
			m.log.ErrorContext(ctx, "sending event", "type", w.typ, "error", err)
		}
	}
}

// HandleEvent runs one unit of asynchronous work. The error it returns says
// whether to retry: events.Permanent for events that can never succeed,
// anything else for transient failures (see events.Result).
func (m *Manager) HandleEvent(ctx context.Context, e cloudevents.Event) (err error) {
	defer func() { m.report(ctx, "event "+e.Type(), err) }()
	e, err = events.Unwrap(e)
	if err != nil {
		return err
	}
	switch e.Type() {
	case events.TypePoolFill:
		var d events.PoolFill
		if err := events.Decode(e, &d); err != nil {
			return err
		}
		ctx = telemetry.WithChallenge(ctx, d.ChallengeID)
		return m.fillPool(ctx, d)
	case events.TypeInstanceUpdate:
		var d events.InstanceUpdate
		if err := events.Decode(e, &d); err != nil {
			return err
		}
		ctx = telemetry.WithIdentity(telemetry.WithChallenge(ctx, d.ChallengeID), d.Identity)
		return m.updateInstance(ctx, d)
	case events.TypeInstanceDelete:
		var d events.InstanceDelete
		if err := events.Decode(e, &d); err != nil {
			return err
		}
		ctx = telemetry.WithIdentity(telemetry.WithChallenge(ctx, d.ChallengeID), d.Identity)
		return m.deleteByIdentity(ctx, d)
	}
	return events.Permanent(fmt.Errorf("unknown event type %q", e.Type()))
}

// permanentIfInvalid turns the errors a redelivery should not retry into
// permanent ones: an unknown strategy, and a failed engine operation, which is
// already recorded on the instance (FailedGeneration, LastError) — re-running
// a failing `pulumi up` six times helps nobody; the client retries by sending
// its PATCH again. Store and etcd errors stay transient.
func permanentIfInvalid(err error) error {
	var oe *iac.OpError
	if errors.Is(err, iac.ErrUnknownStrategy) || errors.As(err, &oe) {
		return events.Permanent(err)
	}
	return err
}
