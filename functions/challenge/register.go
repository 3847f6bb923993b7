package challenge

import (
	"context"
	"net/http"
	"os"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"

	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/telemetry"
)

// Name is the function target (FUNCTION_TARGET) of the challenge function.
const Name = "challenge"

func init() {
	functions.HTTP(Name, telemetry.HandlerFunc(Name, app.ServeHTTP))
}

// app builds the function's dependencies on the first request (a cold
// start), then serves with them.
var app = &bootstrap.Lazy{
	New:       bootstrap.FromEnv(Name, telemetry.NewLogger(os.Stderr)),
	Component: "challfn-" + Name,
	Handler: func(_ context.Context, a *bootstrap.App) (http.Handler, error) {
		return Handler(a), nil
	},
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
