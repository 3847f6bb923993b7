// Package challenge is the challenge function: the ChallengeStore routes of
// the REST contract (/api/v1/challenge...). It routes, decodes and answers;
// the rules live in shared/manager.
package challenge

import (
	"context"
	"net/http"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/httpx"
)

// Service is what the challenge routes need from the business layer.
type Service interface {
	CreateChallenge(ctx context.Context, req *api.CreateChallengeRequest) (*api.Challenge, error)
	RetrieveChallenge(ctx context.Context, id string) (*api.Challenge, error)
	QueryChallenges(ctx context.Context, send func(*api.Challenge) error) error
	UpdateChallenge(ctx context.Context, req *api.UpdateChallengeRequest) (*api.Challenge, error)
	DeleteChallenge(ctx context.Context, id string) error
}

const prefix = "/api/v1/challenge"

type route = func(http.ResponseWriter, *http.Request, []string)

// Routes returns the REST routes of the challenge function; maxBody caps
// request bodies (0 = the default cap).
func Routes(svc Service, maxBody int64) []httpx.Route {
	h := handlers{svc: svc, maxBody: maxBody}
	return []httpx.Route{
		{Prefix: prefix, Methods: map[string]route{
			http.MethodPost: h.create,
			http.MethodGet:  h.query,
		}},
		{Prefix: prefix, Params: 1, Methods: map[string]route{
			http.MethodGet:    h.retrieve,
			http.MethodPatch:  h.update,
			http.MethodDelete: h.delete,
		}},
	}
}

type handlers struct {
	svc     Service
	maxBody int64
}

func (h handlers) create(w http.ResponseWriter, r *http.Request, _ []string) {
	req, err := api.DecodeBody(w, r, h.maxBody, api.DecodeCreateChallengeRequest)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	c, err := h.svc.CreateChallenge(r.Context(), req)
	api.Respond(w, c, err)
}

func (h handlers) query(w http.ResponseWriter, r *http.Request, _ []string) {
	s := api.NewStream(w)
	err := h.svc.QueryChallenges(r.Context(), func(c *api.Challenge) error { return s.Send(c) })
	if err != nil {
		s.Fail(err)
	}
}

func (h handlers) retrieve(w http.ResponseWriter, r *http.Request, p []string) {
	c, err := h.svc.RetrieveChallenge(r.Context(), p[0])
	api.Respond(w, c, err)
}

func (h handlers) update(w http.ResponseWriter, r *http.Request, p []string) {
	req, err := api.DecodeBody(w, r, h.maxBody, api.DecodeUpdateChallengeRequest)
	if err != nil {
		apierr.Write(w, err)
		return
	}
	req.ID = p[0] // the path wins over the body, as with the gateway
	c, err := h.svc.UpdateChallenge(r.Context(), req)
	api.Respond(w, c, err)
}

func (h handlers) delete(w http.ResponseWriter, r *http.Request, p []string) {
	if err := h.svc.DeleteChallenge(r.Context(), p[0]); err != nil {
		apierr.Write(w, err)
		return
	}
	api.WriteEmpty(w)
}
