package telemetry_test

import (
	"context"
	"log/slog"
	"net/http"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/telemetry"
)

// A function's main: logger, providers once at cold start, handlers wrapped
// (they may also be registered in init(): the package-level wrappers resolve
// the providers per request), serve until SIGTERM, then flush and shut down.
func Example_main() {
	slog.SetDefault(telemetry.NewLogger(os.Stdout, telemetry.LogOptions{}))
	ctx := context.Background()
	tel, err := telemetry.Setup(ctx, "challfn-instance", "v0.1.0")
	if err != nil {
		slog.Error("telemetry", slog.String("error", err.Error()))
		os.Exit(1)
	}
	// The registered counts, read from etcd at collection time (store.Counts
	// would implement telemetry.Counter).
	_, _ = tel.Metrics().ObserveCounts(telemetry.CounterFunc(func(ctx context.Context) (telemetry.Counts, error) {
		return telemetry.Counts{}, nil
	}), telemetry.CountsOptions{})

	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/instance", func(w http.ResponseWriter, r *http.Request) {
		ctx := telemetry.WithChallenge(r.Context(), "web-1")
		slog.InfoContext(ctx, "creating instance") // carries trace_id, span_id, challenge_id
	})
	functions.HTTP("instance", telemetry.HandlerFunc("instance", mux.ServeHTTP))
	functions.CloudEvent("instance-events", telemetry.CloudEvent(func(ctx context.Context, e cloudevents.Event) error {
		return nil
	}))

	err = telemetry.Run(ctx, tel, func(context.Context) error {
		return funcframework.Start(os.Getenv("PORT"))
	})
	if err != nil {
		os.Exit(1)
	}
}
