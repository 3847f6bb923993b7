package events

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
)

// HandlerFunc handles one delivered event; see Result for the status it maps to.
type HandlerFunc = func(ctx context.Context, e cloudevents.Event) error

// HTTPHandler serves fn over HTTP for every way challfn events arrive:
// binary or structured CloudEvents (Knative Broker, Eventarc, the local run)
// and raw Pub/Sub push envelopes (a push subscription straight to the
// service). Pub/Sub-wrapped events are unwrapped before fn sees them. It is
// what the instance function mounts at /events; the functions framework's own
// CloudEvent target does the same conversions for source deploys.
func HTTPHandler(ctx context.Context, fn HandlerFunc) (http.Handler, error) {
	p, err := cloudevents.NewHTTP()
	if err != nil {
		return nil, err
	}
	unwrapping := func(ctx context.Context, e cloudevents.Event) error {
		inner, err := Unwrap(e)
		if err != nil {
			return Result(err)
		}
		return fn(ctx, inner)
	}
	ce, err := cloudevents.NewHTTPReceiveHandler(ctx, p, unwrapping)
	if err != nil {
		return nil, err
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("ce-id") != "" || strings.Contains(r.Header.Get("Content-Type"), "cloudevents") {
			ce.ServeHTTP(w, r)
			return
		}
		// A Pub/Sub push: {"message":{"data","attributes","messageId"},"subscription"}.
		body, err := io.ReadAll(io.LimitReader(r.Body, 10<<20))
		if err != nil || r.Method != http.MethodPost || !json.Valid(body) {
			http.Error(w, "not a CloudEvent nor a Pub/Sub push", http.StatusBadRequest)
			return
		}
		e := cloudevents.NewEvent()
		e.SetID("pubsub-push")
		e.SetSource("//pubsub.googleapis.com/" + r.URL.Path)
		e.SetType(TypePubSubMessage)
		_ = e.SetData(cloudevents.ApplicationJSON, body)
		err = unwrapping(r.Context(), e)
		status := http.StatusOK
		var res *cehttp.Result
		if err != nil {
			status = http.StatusInternalServerError
			if cloudevents.ResultAs(err, &res) {
				status = res.StatusCode
			}
		}
		w.WriteHeader(status)
	}), nil
}
