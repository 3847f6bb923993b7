// Package allinone serves the three functions behind one address, routed by
// path as the Knative HTTPRoute and the Cloud Run URL map do in production:
// what the local run and the end-to-end tests serve.
package allinone

import (
	"context"
	"net/http"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/functions/challenge"
	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/functions/janitor"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/grpcx"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/telemetry"
)

// Paths of the local-only endpoints.
const (
	JanitorPath = "/janitor" // the janitor function (a scheduler POSTs CloudEvents here)
	BrokerPath  = "/broker"  // the broker's ingress (EVENTS_SINK_URL)
)

// Mux returns the handler of every function with app, and broker at
// BrokerPath. gRPC calls of both services (ChallengeStore, InstanceManager)
// are answered at the same address, as upstream's one port does; serve it
// with httpx.Server (h2c).
func Mux(ctx context.Context, app *bootstrap.App, broker http.Handler) (http.Handler, error) {
	inst, err := instance.Handler(ctx, app)
	if err != nil {
		return nil, err
	}
	jan, err := events.HTTPHandler(ctx, telemetry.CloudEvent(func(ctx context.Context, _ cloudevents.Event) error {
		return janitor.Run(ctx, app)
	}))
	if err != nil {
		return nil, err
	}
	chall := telemetry.Handler(challenge.Name, challenge.Handler(app))
	in := telemetry.Handler(instance.Name, inst)
	jant := httpx.RequireToken(app.Config.APITokens, telemetry.Handler(janitor.Name, jan))
	brk := httpx.RequireToken(app.Config.APITokens, broker)
	// Routed by path as the gateway does, the path as sent: an http.ServeMux
	// would clean it first and answer "/api/v1/challenge/.." with an HTML
	// redirect, where the routes answer in the contract's shape.
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		switch {
		case p == "/api/v1/challenge" || strings.HasPrefix(p, "/api/v1/challenge/"):
			chall.ServeHTTP(w, r)
		case p == "/api/v1/instance" || strings.HasPrefix(p, "/api/v1/instance/"), p == instance.EventsPath, p == httpx.HealthPath:
			in.ServeHTTP(w, r)
		// The janitor and the broker's ingress stand for private services in
		// production; behind one public address they need the token like
		// every other route (an open ingress would let anyone inject work).
		case p == JanitorPath:
			jant.ServeHTTP(w, r)
		case p == BrokerPath:
			brk.ServeHTTP(w, r)
		default:
			// The gateway's JSON 404 (docs/contract.md §1.1): clients parse
			// every error body.
			apierr.Write(w, apierr.RouteNotFound())
		}
	})
	gs := grpcx.NewServer(app.GRPCOptions())
	challenge.RegisterGRPC(gs, app.Manager)
	instance.RegisterGRPC(gs, app.Manager)
	return grpcx.Split(gs.Handler(), mux), nil
}

// Client is the HTTP client for calls into the functions served by Mux (the
// broker's deliveries, a scheduler's ticks): it carries the first API token
// when tokens are configured.
func Client(app *bootstrap.App) *http.Client {
	var tok string
	if len(app.Config.APITokens) > 0 {
		tok = app.Config.APITokens[0]
	}
	return &http.Client{Transport: httpx.BearerTransport(tok, nil)}
}
