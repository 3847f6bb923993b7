package telemetry

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// ShutdownTimeout bounds the final flush and shutdown in Run. Cloud Run gives
// about 10 s between SIGTERM and SIGKILL; Knative gives terminationGracePeriodSeconds.
const ShutdownTimeout = 5 * time.Second

// Run runs serve (for example func(context.Context) error { return
// funcframework.StartHostPort(host, port) }) until it fails or the process
// receives SIGTERM or SIGINT, then flushes and shuts t down within
// ShutdownTimeout. It returns serve's error (nil after a signal) joined with
// the shutdown error. serve receives a context cancelled on the signal; a
// server that can stop gracefully should do so when it ends. Run does not
// wait for serve to return after a signal: funcframework.Start has no
// shutdown hook, and the process is about to exit anyway.
func Run(ctx context.Context, t *Telemetry, serve func(ctx context.Context) error) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx) }()

	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
		t.log.Info("signal received, flushing telemetry and stopping")
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
	defer cancel()
	if err := t.Shutdown(sctx); err != nil {
		t.log.Warn("telemetry shutdown failed", slog.String("error", err.Error()))
		return errors.Join(serveErr, err)
	}
	return serveErr
}
