package events

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// Unwrap returns the challfn event carried by e. Events that arrive directly
// (Knative, local run) are returned as they are. An event published through
// Pub/Sub arrives wrapped — as a `google.cloud.pubsub.topic.v1.messagePublished`
// CloudEvent from Eventarc, or a push envelope the functions framework turned
// into one — whose message attributes hold our ce-* attributes and whose
// message data holds our data; Unwrap rebuilds the original event from them.
// A messagePublished event without ce-type (a Cloud Scheduler tick published
// to a topic) is returned as is, for the janitor to accept.
func Unwrap(e cloudevents.Event) (cloudevents.Event, error) {
	if e.Type() != TypePubSubMessage {
		return e, nil
	}
	var envelope struct {
		Message struct {
			Data       []byte            `json:"data"`
			Attributes map[string]string `json:"attributes"`
			ID         string            `json:"messageId"`
		} `json:"message"`
	}
	if err := json.Unmarshal(e.Data(), &envelope); err != nil {
		return e, Permanent(fmt.Errorf("decode pubsub message: %w", err))
	}
	attrs := envelope.Message.Attributes
	if attrs["ce-type"] == "" {
		return e, nil
	}
	inner := cloudevents.NewEvent(attrs["ce-specversion"])
	if inner.SpecVersion() == "" {
		inner = cloudevents.NewEvent()
	}
	inner.SetID(or(attrs["ce-id"], envelope.Message.ID))
	inner.SetSource(attrs["ce-source"])
	inner.SetType(attrs["ce-type"])
	if t, err := time.Parse(time.RFC3339Nano, attrs["ce-time"]); err == nil {
		inner.SetTime(t)
	}
	for k, v := range attrs {
		name, ok := strings.CutPrefix(k, "ce-")
		if !ok {
			continue
		}
		switch name {
		case "specversion", "id", "source", "type", "time", "datacontenttype", "dataschema", "subject":
			continue
		}
		inner.SetExtension(name, v)
	}
	data := envelope.Message.Data
	// Some deliveries keep data base64-encoded as a JSON string inside data.
	if len(data) > 0 && data[0] == '"' {
		var s string
		if json.Unmarshal(data, &s) == nil {
			if b, err := base64.StdEncoding.DecodeString(s); err == nil {
				data = b
			}
		}
	}
	if err := inner.SetData(or(attrs["content-type"], cloudevents.ApplicationJSON), data); err != nil {
		return e, Permanent(err)
	}
	if err := inner.Validate(); err != nil {
		return e, Permanent(fmt.Errorf("pubsub message carries an invalid event: %w", err))
	}
	return inner, nil
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
