package events

import (
	"errors"
	"testing"

	cloudevents "github.com/cloudevents/sdk-go/v2"
)

func pubsubEvent(t *testing.T, data string) cloudevents.Event {
	t.Helper()
	e := cloudevents.NewEvent()
	e.SetID("m1")
	e.SetSource("//pubsub.googleapis.com/projects/p/topics/t")
	e.SetType(TypePubSubMessage)
	if err := e.SetData(cloudevents.ApplicationJSON, []byte(data)); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestUnwrap(t *testing.T) {
	for _, tc := range []struct {
		name      string
		data      string
		wantType  string
		wantData  string
		wantErr   bool
		permanent bool
	}{
		{
			name:     "challfn event",
			data:     `{"message":{"messageId":"9","data":"eyJjaGFsbGVuZ2VJZCI6ImMifQ==","attributes":{"ce-specversion":"1.0","ce-id":"e1","ce-source":"//challfn/x","ce-type":"io.challfn.pool.fill","ce-traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","content-type":"application/json"}},"subscription":"s"}`,
			wantType: TypePoolFill,
			wantData: `{"challengeId":"c"}`,
		},
		{
			name:     "scheduler tick without ce attributes stays as is",
			data:     `{"message":{"messageId":"9","data":"e30=","attributes":{}},"subscription":"s"}`,
			wantType: TypePubSubMessage,
		},
		{
			name:      "malformed envelope",
			data:      `[1,2`,
			wantErr:   true,
			permanent: true,
		},
		{
			name:      "attributes without source",
			data:      `{"message":{"data":"e30=","attributes":{"ce-type":"io.challfn.pool.fill"}}}`,
			wantErr:   true,
			permanent: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Unwrap(pubsubEvent(t, tc.data))
			if tc.wantErr {
				if err == nil || errors.Is(err, ErrPermanent) != tc.permanent {
					t.Fatalf("Unwrap error = %v, want permanent=%v", err, tc.permanent)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Type() != tc.wantType {
				t.Fatalf("type %q, want %q", got.Type(), tc.wantType)
			}
			if tc.wantData != "" && string(got.Data()) != tc.wantData {
				t.Fatalf("data %s, want %s", got.Data(), tc.wantData)
			}
			if tc.wantType == TypePoolFill {
				if got.ID() != "e1" || got.Extensions()["traceparent"] == nil {
					t.Fatalf("attributes lost: %v", got)
				}
			}
		})
	}
}

func TestUnwrapPassesDirectEvents(t *testing.T) {
	e := cloudevents.NewEvent()
	e.SetID("1")
	e.SetSource("s")
	e.SetType(TypeInstanceUpdate)
	got, err := Unwrap(e)
	if err != nil || got.ID() != "1" || got.Type() != TypeInstanceUpdate {
		t.Fatalf("Unwrap = %v, %v", got, err)
	}
}
