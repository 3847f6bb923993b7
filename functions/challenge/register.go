package challenge

import (
	"context"
	"net/http"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/grpcx"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/telemetry"
)

// Name is the function target (FUNCTION_TARGET) of the challenge function.
const Name = "challenge"

func init() {
	functions.HTTP(Name, Serve)
}

// Serve is the function's entry: gRPC calls (ChallengeStore) go to its gRPC
// server, every other request to its REST routes, on the same port.
var Serve = grpcx.Split(http.HandlerFunc(app.ServeGRPC), telemetry.Handler(Name, app)).ServeHTTP

// app builds the function's dependencies on the first request (a cold
// start), then serves with them.
var app = &bootstrap.Lazy{
	New:       bootstrap.FromEnv(Name, telemetry.NewLogger(os.Stderr)),
	Component: "challfn-" + Name,
	Handler: func(_ context.Context, a *bootstrap.App) (http.Handler, error) {
		return Handler(a), nil
	},
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

// Handler serves the challenge function's routes and health endpoint with a.
func Handler(a *bootstrap.App) http.Handler {
	router := httpx.Router(Routes(a.Manager, a.Config.MaxRequestBytes)...)
	health := a.Health("challfn-" + Name)
	return httpx.RequireToken(a.Config.APITokens, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == httpx.HealthPath {
			health.ServeHTTP(w, r)
			return
		}
		router.ServeHTTP(w, r)
	}))
}
