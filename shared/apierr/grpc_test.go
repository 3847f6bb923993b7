package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/challfn/challfn/shared/apierr"
)

// Over gRPC an answer carries the same code, message and details as its
// REST body: the gateway only renders that status as JSON.
func TestGRPCStatus(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		message string
		details []proto.Message
	}{
		{"catalogue error", apierr.ChallengeNotFound("1"), codes.NotFound, "Challenge not found.", []proto.Message{
			&errdetails.ErrorInfo{Reason: "CHALLENGE_NOT_FOUND", Domain: apierr.Domain, Metadata: map[string]string{"id": "1"}},
			&errdetails.ResourceInfo{ResourceType: "Challenge", ResourceName: "1", Description: "No challenge with this ID was found."},
		}},
		{"wrapped catalogue error keeps its body", fmt.Errorf("locking: %w", apierr.InstanceExpired("c", "s")), codes.FailedPrecondition, "Instance can't be renewed as it expired.", []proto.Message{
			&errdetails.ErrorInfo{Reason: "INSTANCE_EXPIRED", Domain: apierr.Domain, Metadata: map[string]string{"challenge_id": "c", "source_id": "s"}},
			&errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{{Type: "EXPIRATION", Subject: apierr.Domain + "/Instance", Description: "Instance has expired so can no longer process renewal request."}}},
		}},
		{"raw error is the generic internal one", errors.New("etcd: /challfn/x: secret path"), codes.Internal, "An internal error occurred.", []proto.Message{
			&errdetails.ErrorInfo{Reason: "INTERNAL_ERROR", Domain: apierr.Domain},
		}},
		{"cancellation", fmt.Errorf("waiting: %w", context.Canceled), codes.Canceled, "", nil},
		{"unknown keeps its text", apierr.Unknown("deploying instance failed"), codes.Unknown, "deploying instance failed", nil},
		{"unauthenticated", apierr.Unauthenticated(), codes.Unauthenticated, "Unauthenticated.", []proto.Message{
			&errdetails.ErrorInfo{Reason: "UNAUTHENTICATED", Domain: apierr.Domain},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := apierr.GRPC(tt.err)
			st, ok := status.FromError(got)
			if !ok {
				t.Fatalf("%T is not a gRPC status", got)
			}
			if st.Code() != tt.code || st.Message() != tt.message {
				t.Fatalf("status %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.message)
			}
			// What the client decodes from grpc-status-details-bin.
			b, err := proto.Marshal(st.Proto())
			if err != nil {
				t.Fatal(err)
			}
			back := &spb.Status{}
			if err := proto.Unmarshal(b, back); err != nil {
				t.Fatal(err)
			}
			details := status.FromProto(back).Details()
			if len(details) != len(tt.details) {
				t.Fatalf("details %v, want %v", details, tt.details)
			}
			for i, d := range details {
				m, ok := d.(proto.Message)
				if !ok || !proto.Equal(m, tt.details[i]) {
					t.Errorf("detail %d = %v, want %v", i, d, tt.details[i])
				}
			}
		})
	}
	if apierr.GRPC(nil) != nil {
		t.Fatal("GRPC(nil) is not nil")
	}
}
