package events

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

// Seeds: the payloads of docs/ARCHITECTURE.md's event table.
var dataSeeds = []string{
	`{"challengeId":"1"}`,
	`{"challengeId":"1","identity":"0123456789abcdef","digest":"sha256:` + "aa" + `","strategy":"update_in_place","generation":3}`,
	`{"challengeId":"1","identity":"0123456789abcdef","reason":"expired"}`,
	`{}`, `null`, `[]`, `"x"`, `{"challengeId":1}`, `{"generation":"3"}`, `{"generation":1e400}`,
	`{"challengeId":"\u0000","identity":"../../x"}`, `{"challengeId":"a","challengeId":"b"}`, `{`,
}

// FuzzDecode runs the data of each work event type through Decode into its
// typed struct, as Manager.HandleEvent does: a payload either decodes to a
// value that survives a send/receive round trip, or is a permanent error
// (the broker must not retry it forever).
func FuzzDecode(f *testing.F) {
	for _, s := range dataSeeds {
		for typ := range 3 {
			f.Add(uint8(typ), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		var v, back any
		var name string
		switch typ % 3 {
		case 0:
			name, v, back = TypePoolFill, &PoolFill{}, &PoolFill{}
		case 1:
			name, v, back = TypeInstanceUpdate, &InstanceUpdate{}, &InstanceUpdate{}
		default:
			name, v, back = TypeInstanceDelete, &InstanceDelete{}, &InstanceDelete{}
		}
		e := cloudevents.NewEvent()
		e.SetID("1")
		e.SetSource("//fuzz")
		e.SetType(name)
		if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
			t.Skip()
		}
		err := Decode(e, v)
		if err != nil {
			if !errors.Is(err, ErrPermanent) {
				t.Fatalf("%s %q: error not permanent: %v", name, data, err)
			}
			return
		}
		again, err := New(context.Background(), "//fuzz", name, v)
		if err != nil {
			t.Fatalf("%s %q: decoded %#v does not encode: %v", name, data, v, err)
		}
		if err := Decode(again, back); err != nil {
			t.Fatalf("%s: re-decoding %s: %v", name, again.Data(), err)
		}
		if !reflect.DeepEqual(v, back) {
			t.Fatalf("%s: round trip %#v != %#v", name, back, v)
		}
	})
}

// pubsubEnvelope is what a Pub/Sub push or Eventarc delivers for an event
// our pubsub sender published.
func pubsubEnvelope(attrs map[string]string, data []byte) []byte {
	b, _ := json.Marshal(map[string]any{"message": map[string]any{"data": data, "attributes": attrs, "messageId": "m1"}, "subscription": "s"})
	return b
}

// FuzzUnwrap feeds arbitrary Pub/Sub envelopes to Unwrap: no panic; an
// error is permanent; an unwrapped event is valid and carries the
// envelope's ce-type.
func FuzzUnwrap(f *testing.F) {
	attrs := map[string]string{
		"ce-specversion": "1.0", "ce-id": "1", "ce-source": "//challfn/instance", "ce-type": TypePoolFill,
		"content-type": "application/json", "ce-time": "2024-07-10T15:00:00Z",
		"ce-traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	f.Add(pubsubEnvelope(attrs, []byte(`{"challengeId":"1"}`)))
	f.Add(pubsubEnvelope(map[string]string{}, nil))
	f.Add(pubsubEnvelope(map[string]string{"ce-type": "x", "ce-specversion": "0.3"}, []byte(`"`+base64.StdEncoding.EncodeToString([]byte(`{}`))+`"`)))
	f.Add(pubsubEnvelope(map[string]string{"ce-type": "x", "ce-source": "", "ce-id": ""}, []byte(`{}`)))
	f.Add(pubsubEnvelope(map[string]string{"ce-type": "x", "ce-source": "s", "ce-BAD KEY": "v", "ce-": "v", "ce-dataschema": "::"}, []byte(`{}`)))
	for _, s := range []string{`{}`, `{"message":null}`, `{"message":{"data":"!!"}}`, `{"message":{"attributes":{"ce-type":1}}}`, `[`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, envelope []byte) {
		e := cloudevents.NewEvent()
		e.SetID("pubsub-push")
		e.SetSource("//pubsub.googleapis.com/fuzz")
		e.SetType(TypePubSubMessage)
		_ = e.SetData(cloudevents.ApplicationJSON, envelope)
		inner, err := Unwrap(e)
		if err != nil {
			if !errors.Is(err, ErrPermanent) {
				t.Fatalf("%q: error not permanent: %v", envelope, err)
			}
			return
		}
		if inner.Type() == TypePubSubMessage {
			return // a scheduler tick, passed through as is
		}
		if err := inner.Validate(); err != nil {
			t.Fatalf("%q: unwrapped an invalid event: %v", envelope, err)
		}
		var env struct {
			Message struct {
				Attributes map[string]string `json:"attributes"`
			} `json:"message"`
		}
		if json.Unmarshal(envelope, &env) != nil || env.Message.Attributes["ce-type"] != inner.Type() {
			t.Fatalf("%q: unwrapped type %q", envelope, inner.Type())
		}
	})
}
