package instance

import (
	"context"
	"net/http"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/grpcx"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/telemetry"
)

// Name is the function target of the instance function's REST routes (which
// also receive events at EventsPath); EventsName is its CloudEvent-only
// target, for platforms that deliver events to a dedicated function.
const (
	Name       = "instance"
	EventsName = "instance-events"
)

func init() {
	functions.HTTP(Name, Serve)
	functions.CloudEvent(EventsName, telemetry.CloudEvent(handleEvent))
}

// Serve is the function's entry: gRPC calls (InstanceManager) go to its gRPC
// server, every other request (REST routes, events, health) to its HTTP
// handler, on the same port.
var Serve = grpcx.Split(http.HandlerFunc(app.ServeGRPC), telemetry.Handler(Name, app)).ServeHTTP

// app builds the function's dependencies on the first request or event (a
// cold start), then serves with them.
var app = &bootstrap.Lazy{
	New:       bootstrap.FromEnv(Name, telemetry.NewLogger(os.Stderr)),
	Component: "challfn-" + Name,
	Handler:   Handler,
	GRPC: func(_ context.Context, a *bootstrap.App) (http.Handler, error) {
		return GRPCHandler(a), nil
	},
}

// GRPCHandler serves the function's gRPC service with a.
func GRPCHandler(a *bootstrap.App) http.Handler {
	s := grpcx.NewServer(a.GRPCOptions())
	RegisterGRPC(s, a.Manager)
	return s.Handler()
}

func handleEvent(ctx context.Context, e cloudevents.Event) error {
	a, err := app.Get(ctx)
	if err != nil {
		return events.Result(err) // transient: the broker retries
	}
	return events.Result(a.Manager.HandleEvent(ctx, e))
}

// Handler serves the instance function's routes, its events (at EventsPath)
// and its health endpoint with a.
func Handler(ctx context.Context, a *bootstrap.App) (http.Handler, error) {
	router := httpx.Router(Routes(a.Manager, a.Config.MaxRequestBytes)...)
	health := a.Health("challfn-" + Name)
	evs, err := events.HTTPHandler(ctx, telemetry.CloudEvent(func(ctx context.Context, e cloudevents.Event) error {
		return events.Result(a.Manager.HandleEvent(ctx, e))
	}))
	if err != nil {
		return nil, err
	}
	// With API tokens configured (a public URL), events need a token too;
	// brokers that cannot send one deliver to the private EventsName target.
	return httpx.RequireToken(a.Config.APITokens, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case httpx.HealthPath:
			health.ServeHTTP(w, r)
		case EventsPath:
			evs.ServeHTTP(w, r)
		default:
			router.ServeHTTP(w, r)
		}
	})), nil
}
