// Package funcmain is the main of every challfn function binary: telemetry set
// up at cold start, the functions framework serving the registered target,
// and a flush and shutdown of telemetry on SIGTERM.
package funcmain

import (
	"context"
	"log/slog"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/challfn/challfn/shared/sandbox"
	"github.com/challfn/challfn/shared/telemetry"
	"github.com/challfn/challfn/shared/version"
)

// Run serves target (unless FUNCTION_TARGET names another registered one) on
// PORT (default 8080), on 127.0.0.1 only when LOCAL_ONLY=true.
func Run(service, target string) {
	ctx := context.Background()
	// The environment holds challfn's credentials: no process of the same uid (a
	// scenario program without a jail) may read them through /proc.
	_ = sandbox.SetUndumpable()
	logger := telemetry.NewLogger(os.Stderr)
	slog.SetDefault(logger)
	if os.Getenv("FUNCTION_TARGET") == "" {
		os.Setenv("FUNCTION_TARGET", target)
	}
	t, err := telemetry.Setup(ctx, service, version.Version)
	if err != nil {
		logger.Error("telemetry setup failed; continuing without it", "error", err)
		t = telemetry.Disabled()
	}
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	host := ""
	if os.Getenv("LOCAL_ONLY") == "true" {
		host = "127.0.0.1"
	}
	logger.Info("serving", "target", os.Getenv("FUNCTION_TARGET"), "port", port, "version", version.Version)
	if err := telemetry.Run(ctx, t, func(context.Context) error { return funcframework.StartHostPort(host, port) }); err != nil {
		logger.Error("function stopped", "error", err)
		os.Exit(1)
	}
}
