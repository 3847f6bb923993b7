// Package funcmain is the main of every challfn function binary: telemetry set
// up at cold start, the function's target served on PORT, and a flush and
// shutdown of telemetry on SIGTERM.
package funcmain

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/sandbox"
	"github.com/challfn/challfn/shared/telemetry"
	"github.com/challfn/challfn/shared/version"
)

// Run serves target (unless FUNCTION_TARGET names another registered one) on
// PORT (default 8080), on 127.0.0.1 only when LOCAL_ONLY=true.
//
// h is target's entry when it is an HTTP function that also serves gRPC (the
// challenge and instance functions, registered with functions.HTTP as h):
// it is then served by challfn's own server, which speaks HTTP/1.1 and h2c on
// the one port (funcframework's server speaks HTTP/1.1 only, and gRPC
// clients, Knative's queue-proxy and Cloud Run with a port named h2c send
// HTTP/2 cleartext). Any other target (a CloudEvent function, or h == nil)
// is served by the functions framework.
func Run(service, target string, h http.Handler) {
	ctx := context.Background()
	// The environment holds challfn's credentials: no process of the same uid (a
	// scenario program without a jail) may read them through /proc.
	_ = sandbox.SetUndumpable()
	p, perr := config.ProcessFromEnv()
	logger := telemetry.NewLogger(os.Stderr, telemetry.LogOptions{Level: p.LogLevel, LogSourceID: p.LogSourceID})
	slog.SetDefault(logger)
	if perr != nil {
		logger.Warn("process configuration: using defaults for the values in error", "error", perr)
	}
	served := p.Target
	if served == "" {
		served = target
		// The functions framework finds the function to serve through it.
		os.Setenv("FUNCTION_TARGET", target)
	}
	opts := []telemetry.Option{telemetry.WithGCPDetector(p.GCPDetector)}
	if p.FlushTimeout > 0 {
		opts = append(opts, telemetry.WithFlushTimeout(p.FlushTimeout))
	}
	t, err := telemetry.Setup(ctx, service, version.Version, opts...)
	if err != nil {
		logger.Error("telemetry setup failed; continuing without it", "error", err)
		t = telemetry.Disabled()
	}
	host := ""
	if p.LocalOnly {
		host = "127.0.0.1"
	}
	serve := func(context.Context) error { return funcframework.StartHostPort(host, p.Port) }
	if h != nil && served == target {
		serve = func(ctx context.Context) error {
			return listen(ctx, net.JoinHostPort(host, p.Port), withTimeout(h, p.RequestTimeout))
		}
	}
	logger.Info("serving", "target", served, "port", p.Port, "version", version.Version)
	if err := telemetry.Run(ctx, t, serve); err != nil {
		logger.Error("function stopped", "error", err)
		os.Exit(1)
	}
}

// listen serves h on addr with httpx.Server until ctx ends, then stops
// accepting and lets calls in flight finish within telemetry.ShutdownTimeout.
func listen(ctx context.Context, addr string, h http.Handler) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := httpx.Server(h)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), telemetry.ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := httpx.Serve(srv, l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// withTimeout gives each request the deadline d the platform announces
// (config.Process.RequestTimeout), as funcframework's server does; none when
// d is 0.
func withTimeout(h http.Handler, d time.Duration) http.Handler {
	if d <= 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}
