// Package janitor is the janitor function: a CloudEvent function fired by a
// scheduler (Knative PingSource, Cloud Scheduler through Pub/Sub/Eventarc or
// with ce-* headers) that runs one sweep of shared/manager's Janitor.
package janitor

import (
	"context"

	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/telemetry"
)

// Name is the function target of the janitor.
const Name = "janitor"

func init() {
	functions.CloudEvent(Name, telemetry.CloudEvent(handle))
}

var app = &bootstrap.Lazy{New: bootstrap.FromEnv(Name)}

// handle runs one sweep for any tick, whatever the scheduler's event type:
// the event only says "now".
func handle(ctx context.Context, _ cloudevents.Event) error {
	a, err := app.Get(ctx)
	if err != nil {
		return events.Result(err)
	}
	return Run(ctx, a)
}

// Run is one janitor run with a; its error is what the scheduler sees.
func Run(ctx context.Context, a *bootstrap.App) error {
	_, err := a.Manager.Janitor(ctx, a.Engine, a.Config.OrphanGrace)
	return events.Result(err)
}
