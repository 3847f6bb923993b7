// Package allinone serves the three functions behind one address, routed by
// path as the Knative HTTPRoute and the Cloud Run URL map do in production:
// what the local run and the end-to-end tests serve.
package allinone

import (
	"context"
	"net/http"

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
	mux := http.NewServeMux()
	mux.Handle("/api/v1/challenge", chall)
	mux.Handle("/api/v1/challenge/", chall)
	mux.Handle("/api/v1/instance", in)
	mux.Handle("/api/v1/instance/", in)
	mux.Handle(instance.EventsPath, in)
	mux.Handle(httpx.HealthPath, in)
	// The janitor and the broker's ingress stand for private services in
	// production; behind one public address they need the token like every
	// other route (an open ingress would let anyone inject work events).
	mux.Handle(JanitorPath, httpx.RequireToken(app.Config.APITokens, telemetry.Handler(janitor.Name, jan)))
	mux.Handle(BrokerPath, httpx.RequireToken(app.Config.APITokens, broker))
	// Any other path is the gateway's JSON 404 (docs/contract.md §1.1), not
	// ServeMux's plain-text one: clients parse every error body.
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		apierr.Write(w, apierr.RouteNotFound())
	}))
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
