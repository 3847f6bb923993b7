package manager

import (
	"context"

	"github.com/challfn/challfn/shared/events"
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

// dispatch hands work to the event sink, one event per item: the one path of
// asynchronous work, whatever the sink (a broker, Pub/Sub, or the process's
// own queue in the local run).
func (m *Manager) dispatch(ctx context.Context, work []workItem) {
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

// requestPoolFill asks for the pool of a challenge to be filled. One event, however
// many instances are missing: fills of one challenge run one at a time (the pool
// lock), and the fill that runs goes on until the pool is full (fillPool), so more
// events would only step aside. The work sent is thus bounded by what can run, never
// by min.
func (m *Manager) requestPoolFill(ctx context.Context, challengeID string) {
	m.dispatch(ctx, []workItem{fillWork(challengeID)})
}
