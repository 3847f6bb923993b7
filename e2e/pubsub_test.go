package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/events/pubsubtest"
	"github.com/challfn/challfn/shared/store"
)

// lcPublish publishes a message the way Cloud Scheduler does to a Pub/Sub
// target: plain data, no CloudEvents attributes.
func lcPublish(t testing.TB, emu *pubsubtest.Emulator, topic string, data []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"messages": []map[string]any{{"data": data}}})
	resp, err := http.Post("http://"+emu.Host+"/v1/"+topic+":publish", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("publish to %s: %s", topic, resp.Status)
	}
}

// Event delivery as on Cloud Run, through Google's real Pub/Sub emulator:
// the functions publish their events to a topic (EVENTS_SINK_URL=pubsub://…)
// whose push subscription POSTs to the instance function's /events, and a
// scheduler topic pushes ticks to the janitor. A pool fill (challenge
// creation), a refill (claim), a janitor tick and the expiry deletion it
// causes, and the deletions of a challenge deletion all travel that way; the
// in-process broker carries nothing.
func TestPubSubDelivery(t *testing.T) {
	emu := pubsubtest.Start(t)
	ctx := context.Background()
	topic, err := emu.CreateTopic(ctx, "challfn-events")
	if err != nil {
		t.Fatal(err)
	}
	ticks, err := emu.CreateTopic(ctx, "janitor-ticks")
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.Start(t, testenv.Options{Env: map[string]string{
		"EVENTS_SINK_URL":      "pubsub://" + topic,
		"PUBSUB_EMULATOR_HOST": emu.Host, // as Google's client libraries read it
	}})
	if err := emu.CreatePushSubscription(ctx, "instance-events", topic, env.URL+instance.EventsPath); err != nil {
		t.Fatal(err)
	}
	if err := emu.CreatePushSubscription(ctx, "janitor", ticks, env.URL+allinone.JanitorPath); err != nil {
		t.Fatal(err)
	}
	ref := env.Scenario(t, "outputs")

	pooledN := func(n int) func() bool {
		return func() bool { _, pooled := lcRecords(t, env, "ps"); return len(pooled) == n }
	}
	lcCreateChallenge(t, env, `{"id":"ps","scenario":"`+ref+`","timeout":"2s","min":"1"}`)
	waitFor(t, 90*time.Second, "the pool fill through Pub/Sub", pooledN(1))
	_, pooled := lcRecords(t, env, "ps")
	lcWantStacks(t, env, lcStacksOf(pooled))

	a := lcCreateInstance(t, env, "ps", "a")
	if a.ConnectionInfo != pooled[0].ConnectionInfo {
		t.Fatalf("claim not answered from the pool: %+v", a)
	}
	waitFor(t, 90*time.Second, "the refill through Pub/Sub", pooledN(1))
	claimed, pooled := lcRecords(t, env, "ps")
	lcWantStacks(t, env, lcStacksOf(claimed, pooled))

	// a expires; a scheduler tick reaches the janitor through its topic, the
	// janitor publishes the deletion, the push brings it to /events.
	time.Sleep(time.Until(a.Until.Add(100 * time.Millisecond)))
	lcPublish(t, emu, ticks, []byte(fmt.Sprintf(`{"tick":%q}`, time.Now().UTC().Format(time.RFC3339))))
	waitFor(t, 90*time.Second, "the expiry of a through the janitor tick", func() bool {
		_, err := env.App.Store.InstanceBySource(ctx, "ps", "a")
		return errors.Is(err, store.ErrNotFound)
	})
	must(t, env.URL, "GET", "/api/v1/instance/ps/a", "", http.StatusNotFound)
	claimed, pooled = lcRecords(t, env, "ps")
	if len(claimed) != 0 || len(pooled) != 1 {
		t.Fatalf("after expiry: %d claimed, %d pooled", len(claimed), len(pooled))
	}
	lcWantStacks(t, env, lcStacksOf(pooled))

	// DeleteChallenge fans its deletions out through Pub/Sub and waits.
	must(t, env.URL, "DELETE", "/api/v1/challenge/ps", "", http.StatusOK)
	lcWantStacks(t, env, nil)
	if delivered, dropped := env.Broker.Stats(); delivered+dropped != 0 {
		t.Fatalf("the in-process broker carried %d events: not delivered through Pub/Sub", delivered+dropped)
	}
}
