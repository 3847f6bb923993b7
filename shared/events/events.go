// Package events defines the CloudEvents that carry challfn's asynchronous work
// (docs/design.md, decision 4: nothing runs after a response) and the ways to send them.
//
// Work that must outlive a request — filling a pool slot, applying a hot update
// to one instance, deleting one instance — is not done in a goroutine but sent
// as a CloudEvent to the instance function through a broker (Knative Broker,
// Pub/Sub), which retries until the handler acknowledges it. Handlers are
// idempotent: they compare the event with the stored state, so a duplicate or
// late delivery changes nothing.
package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	ceotel "github.com/cloudevents/sdk-go/observability/opentelemetry/v2/client"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/google/uuid"
)

// Event types (docs/ARCHITECTURE.md).
const (
	TypePoolFill       = "io.challfn.pool.fill"
	TypeInstanceUpdate = "io.challfn.instance.update"
	TypeInstanceDelete = "io.challfn.instance.delete"
	TypeJanitorRun     = "io.challfn.janitor.run"

	// Types of the schedulers that fire the janitor.
	TypeKnativePing   = "dev.knative.sources.ping"
	TypePubSubMessage = "google.cloud.pubsub.topic.v1.messagePublished"
)

// PoolFill asks for one more pooled instance of a challenge, if the pool still
// needs it when the event is handled.
type PoolFill struct {
	ChallengeID string `json:"challengeId"`
}

// Event payloads carry keys, never state: a handler reads the records when it
// runs, so that a late or duplicated event acts on what is true then.

// InstanceUpdate asks to bring one claimed instance to its challenge's current
// generation (scenario and additional values), with the strategy the
// challenge records for that generation.
type InstanceUpdate struct {
	ChallengeID string `json:"challengeId"`
	Identity    string `json:"identity"`
}

// InstanceDelete asks to destroy one instance and forget it, for Reason.
type InstanceDelete struct {
	ChallengeID string       `json:"challengeId"`
	Identity    string       `json:"identity"`
	Reason      DeleteReason `json:"reason,omitempty"`
}

// DeleteReason says why an instance is to be deleted. The handler checks that
// the reason still holds when it runs; "" (an explicit request) always does.
type DeleteReason string

const (
	// ReasonExpired: the instance's until had passed when the janitor looked;
	// a renewal (or a challenge update) since cancels the deletion.
	ReasonExpired DeleteReason = "expired"
	// ReasonPoolShrink: the pool holds more than it should, or the instance
	// is outdated; a claim since cancels the deletion.
	ReasonPoolShrink DeleteReason = "pool-shrink"
	// ReasonChallengeDelete: the challenge is being deleted.
	ReasonChallengeDelete DeleteReason = "challenge-delete"
	// ReasonRepair: the janitor found the record's stack gone.
	ReasonRepair DeleteReason = "repair"
)

// New builds an event of typ from source with data as JSON, carrying the trace
// context of ctx in the distributed-tracing extension.
func New(ctx context.Context, source, typ string, data any) (cloudevents.Event, error) {
	e := cloudevents.NewEvent()
	e.SetID(uuid.NewString())
	e.SetSource(source)
	e.SetType(typ)
	e.SetTime(time.Now().UTC())
	if err := e.SetData(cloudevents.ApplicationJSON, data); err != nil {
		return e, fmt.Errorf("encode %s data: %w", typ, err)
	}
	ceotel.InjectDistributedTracingExtension(ctx, e)
	return e, nil
}

// Context returns ctx carrying the trace context found in e's
// distributed-tracing extension, so a handler's spans join the sender's trace.
func Context(ctx context.Context, e cloudevents.Event) context.Context {
	return ceotel.ExtractDistributedTracingExtension(ctx, e)
}

// Decode reads e's JSON data into v. A malformed payload is permanent: the
// error is wrapped with Permanent so the handler answers 4xx.
func Decode(e cloudevents.Event, v any) error {
	if err := json.Unmarshal(e.Data(), v); err != nil {
		return Permanent(fmt.Errorf("decode %s data: %w", e.Type(), err))
	}
	return nil
}

// Sender delivers events.
type Sender interface {
	Send(ctx context.Context, e cloudevents.Event) error
}

// ErrPermanent marks errors no retry can fix.
var ErrPermanent = errors.New("permanent")

type permanent struct{ err error }

func (p permanent) Error() string        { return p.err.Error() }
func (p permanent) Unwrap() []error      { return []error{p.err, ErrPermanent} }
func (p permanent) Is(target error) bool { return target == ErrPermanent }

// Permanent marks err as one that no redelivery can fix (bad payload, unknown
// type): handlers answer 4xx so brokers stop retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanent{err}
}

// Result turns a handler error into what the CloudEvents receiver answers:
// nil → 200, a permanent error → 400 (no retry), anything else → 500 (the
// broker retries).
func Result(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrPermanent):
		return cehttp.NewResult(400, "%s", err.Error())
	default:
		return cehttp.NewResult(500, "%s", err.Error())
	}
}
