// Package instance is the instance function: the InstanceManager routes of the
// REST contract (/api/v1/instance...) and the CloudEvents that carry the
// asynchronous instance work (pool fills, hot updates, deletions). It routes,
// decodes and answers; the rules live in shared/manager.
package instance

import (
	"context"
	"net/http"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/httpx"
)

// Service is what the instance routes need from the business layer.
type Service interface {
	CreateInstance(ctx context.Context, req *api.CreateInstanceRequest) (*api.Instance, error)
	RetrieveInstance(ctx context.Context, challengeID, sourceID string) (*api.Instance, error)
	QueryInstances(ctx context.Context, sourceID string, send func(*api.Instance) error) error
	RenewInstance(ctx context.Context, challengeID, sourceID string) (*api.Instance, error)
	DeleteInstance(ctx context.Context, challengeID, sourceID string) error
}

// EventService handles the asynchronous work events.
type EventService interface {
	HandleEvent(ctx context.Context, e cloudevents.Event) error
}

const prefix = "/api/v1/instance"

// EventsPath is where the instance service receives its CloudEvents when the
// REST routes and the events share one service (Knative, the local run).
const EventsPath = "/events"

type route = func(http.ResponseWriter, *http.Request, []string)

// Routes returns the REST routes of the instance function; maxBody caps
// request bodies (0 = the default cap).
func Routes(svc Service, maxBody int64) []httpx.Route {
	h := handlers{svc: svc, maxBody: maxBody}
	return []httpx.Route{
		{Prefix: prefix, Methods: map[string]route{
			http.MethodPost: h.create,
			http.MethodGet:  h.query,
		}},
		{Prefix: prefix, Params: 2, Methods: map[string]route{
			http.MethodGet:    h.retrieve,
			http.MethodPatch:  h.renew,
			http.MethodDelete: h.delete,
		}},
	}
}

type handlers struct {
	svc     Service
	maxBody int64
}

func (h handlers) create(w http.ResponseWriter, r *http.Request, _ []string) {
	req, err := api.DecodeBody(w, r, h.maxBody, api.DecodeCreateInstanceRequest)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	in, err := h.svc.CreateInstance(r.Context(), req)
	api.Respond(w, in, err)
}

func (h handlers) query(w http.ResponseWriter, r *http.Request, _ []string) {
	sourceID, err := api.ParseQueryInstance(r.URL.RawQuery)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	s := api.NewStream(w)
	if err := h.svc.QueryInstances(r.Context(), sourceID, func(in *api.Instance) error { return s.Send(in) }); err != nil {
		s.Fail(err)
	}
}

func (h handlers) retrieve(w http.ResponseWriter, r *http.Request, p []string) {
	in, err := h.svc.RetrieveInstance(r.Context(), p[0], p[1])
	api.Respond(w, in, err)
}

func (h handlers) renew(w http.ResponseWriter, r *http.Request, p []string) {
	// The body is decoded for its errors only: the path values win.
	if _, err := api.DecodeBody(w, r, h.maxBody, api.DecodeRenewInstanceRequest); err != nil {
		apierr.Write(w, err)
		return
	}
	in, err := h.svc.RenewInstance(r.Context(), p[0], p[1])
	api.Respond(w, in, err)
}

func (h handlers) delete(w http.ResponseWriter, r *http.Request, p []string) {
	if err := h.svc.DeleteInstance(r.Context(), p[0], p[1]); err != nil {
		apierr.Write(w, err)
		return
	}
	api.WriteEmpty(w)
}
