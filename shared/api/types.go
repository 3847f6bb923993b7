// Package api holds the wire types of the chall-manager REST contract and
// their JSON encoding, byte-compatible in meaning with grpc-gateway's default
// marshaler (protojson, EmitUnpopulated, DiscardUnknown): docs/contract.md §1.
//
// Handlers decode requests with the Decode* functions (which reproduce the
// gateway's body handling and error texts) and answer with Write/WriteEmpty,
// the Stream writer and shared/apierr. The rest of the code only sees the
// plain Go structs below.
package api

import (
	"slices"
	"strconv"
	"time"
)

// UpdateStrategy is the hot-update strategy of UpdateChallengeRequest.
type UpdateStrategy int32

// The strategies, numbered as upstream's enum.
const (
	UpdateInPlace UpdateStrategy = 0
	BlueGreen     UpdateStrategy = 1
	Recreate      UpdateStrategy = 2
)

// String is the enum name as on the wire (`update_in_place`, ...), or the
// number for a value the enum does not define (protojson does the same).
func (s UpdateStrategy) String() string {
	switch s {
	case UpdateInPlace:
		return "update_in_place"
	case BlueGreen:
		return "blue_green"
	case Recreate:
		return "recreate"
	}
	return strconv.Itoa(int(s))
}

// Valid reports whether s is one of the defined strategies. protojson accepts
// any number for an open proto3 enum, so decoded values must be checked.
func (s UpdateStrategy) Valid() bool { return s >= UpdateInPlace && s <= Recreate }

// ParseUpdateStrategy reads a strategy name as written on the wire.
func ParseUpdateStrategy(name string) (UpdateStrategy, bool) {
	for _, s := range []UpdateStrategy{UpdateInPlace, BlueGreen, Recreate} {
		if s.String() == name {
			return s, true
		}
	}
	return 0, false
}

// Challenge is the api.v1.challenge.Challenge message.
type Challenge struct {
	ID       string
	Scenario string
	// Timeout nil is unset (`"timeout":null`).
	Timeout *time.Duration
	// Until nil is unset (`"until":null`).
	Until *time.Time
	// Instances are the claimed instances only (never pooled ones).
	Instances  []*Instance
	Additional map[string]string
	Min        int64
	Max        int64
}

// Instance is the api.v1.instance.Instance message.
type Instance struct {
	ChallengeID string
	SourceID    string
	// Since and LastRenew: the zero time is unset (`null`).
	Since     time.Time
	LastRenew time.Time
	// Until nil is unset: the key is then omitted (proto3 optional).
	Until          *time.Time
	ConnectionInfo string
	// Flags; the deprecated `flag` key is written iff there is exactly one.
	Flags      []string
	Additional map[string]string
}

// CreateChallengeRequest is the body of POST /api/v1/challenge.
type CreateChallengeRequest struct {
	ID         string
	Scenario   string
	Timeout    *time.Duration
	Until      *time.Time
	Additional map[string]string
	Min        int64
	Max        int64
}

// FieldMask is a google.protobuf.FieldMask. Paths are proto (snake_case)
// names: protojson converts the wire's lowerCamelCase ones.
type FieldMask struct {
	Paths []string
}

// UpdateChallengeRequest is the body of PATCH /api/v1/challenge/{id}.
//
// Update rule (docs/contract.md §3.5): a field is applied iff its path is in the
// mask (Masks); a masked field that was absent from the body carries its
// zero value here (nil Timeout/Until/Additional, 0 Min/Max), which resets it.
type UpdateChallengeRequest struct {
	ID string
	// Scenario nil is absent (proto3 optional).
	Scenario *string
	// UpdateStrategy nil is absent; see Strategy. Not mask-controlled.
	UpdateStrategy *UpdateStrategy
	Timeout        *time.Duration
	Until          *time.Time
	// UpdateMask nil is absent (or `null`): no field is applied.
	UpdateMask *FieldMask
	Additional map[string]string
	Min        int64
	Max        int64
}

// Masks reports whether path (snake_case, exact match as upstream) is in
// the update mask.
func (r *UpdateChallengeRequest) Masks(path string) bool {
	return r.UpdateMask != nil && slices.Contains(r.UpdateMask.Paths, path)
}

// MaskPaths is the mask's paths, nil without a mask.
func (r *UpdateChallengeRequest) MaskPaths() []string {
	if r.UpdateMask == nil {
		return nil
	}
	return r.UpdateMask.Paths
}

// Strategy is the requested strategy, update_in_place when absent.
func (r *UpdateChallengeRequest) Strategy() UpdateStrategy {
	if r.UpdateStrategy == nil {
		return UpdateInPlace
	}
	return *r.UpdateStrategy
}

// CreateInstanceRequest is the body of POST /api/v1/instance.
type CreateInstanceRequest struct {
	ChallengeID string
	SourceID    string
	Additional  map[string]string
}

// RenewInstanceRequest is the body of PATCH /api/v1/instance/{challenge_id}/{source_id};
// the path values win over the body's (the handler sets them after decoding).
type RenewInstanceRequest struct {
	ChallengeID string
	SourceID    string
}

// The requests below have no REST body (their fields are path or query
// parameters): they are the gRPC services' messages.

// RetrieveChallengeRequest is api.v1.challenge.RetrieveChallengeRequest.
type RetrieveChallengeRequest struct{ ID string }

// DeleteChallengeRequest is api.v1.challenge.DeleteChallengeRequest.
type DeleteChallengeRequest struct{ ID string }

// RetrieveInstanceRequest is api.v1.instance.RetrieveInstanceRequest.
type RetrieveInstanceRequest struct{ ChallengeID, SourceID string }

// QueryInstanceRequest is api.v1.instance.QueryInstanceRequest.
type QueryInstanceRequest struct{ SourceID string }

// DeleteInstanceRequest is api.v1.instance.DeleteInstanceRequest.
type DeleteInstanceRequest struct{ ChallengeID, SourceID string }

// Empty is google.protobuf.Empty: QueryChallenge's request and the answer
// of both deletions.
type Empty struct{}
