package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Flush exports pending spans and the current metrics, waiting at most the
// flush timeout (less if ctx ends sooner). Errors are logged, never returned:
// a failing collector must not fail a request. After a failure, flushes wait
// at most 100 ms for the next 30 s, so an unreachable collector costs each
// request little; the first success restores the full timeout. Both providers
// flush in parallel; Flush returns only when both are done.
func (t *Telemetry) Flush(ctx context.Context) {
	if t.sdkTP == nil && t.sdkMP == nil {
		return
	}
	timeout := t.flushTimeout
	degraded := time.Now().UnixNano() < t.degradedUntil.Load()
	if degraded && timeout > degradedFlushTimeout {
		timeout = degradedFlushTimeout
	}
	// The request may already be cancelled (client gone): the export must still
	// be attempted, within its own bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var wg sync.WaitGroup
	var terr, merr error
	if t.sdkTP != nil {
		wg.Go(func() { terr = t.sdkTP.ForceFlush(ctx) })
	}
	if t.sdkMP != nil {
		wg.Go(func() { merr = t.sdkMP.ForceFlush(ctx) })
	}
	wg.Wait()
	if err := errors.Join(terr, merr); err != nil {
		t.degradedUntil.Store(time.Now().Add(degradedPeriod).UnixNano())
		if !degraded { // once per outage, not once per request
			t.log.WarnContext(ctx, "telemetry flush failed; shortening flush waits for a while", slog.String("error", err.Error()))
		}
		return
	}
	if degraded {
		t.degradedUntil.Store(0)
		t.log.InfoContext(ctx, "telemetry flush recovered")
	}
}

// Degraded reports whether a recent flush failed (flushes are then shortened).
func (t *Telemetry) Degraded() bool { return time.Now().UnixNano() < t.degradedUntil.Load() }

// Shutdown flushes and stops both providers; later calls return the first result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errs []error
		if t.sdkTP != nil {
			if err := t.sdkTP.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("telemetry: tracer provider shutdown: %w", err))
			}
		}
		if t.sdkMP != nil {
			if err := t.sdkMP.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("telemetry: meter provider shutdown: %w", err))
			}
		}
		t.shutdownErr = errors.Join(errs...)
	})
	return t.shutdownErr
}
