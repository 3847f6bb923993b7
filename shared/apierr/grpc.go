package apierr

import (
	"google.golang.org/grpc/status"
)

// GRPCStatus is the answer as a gRPC status: the same code, message and
// details (in the same order) as the REST body, which is what upstream's gRPC
// server sends (its gateway renders that status as JSON). grpc-go finds it
// through status.FromError, so a gRPC handler answers with the catalogue by
// returning the *Error itself (not wrapped: a wrapping error's text would
// become the status message).
func (e *Error) GRPCStatus() *status.Status { return status.FromProto(e.Proto()) }

// GRPC maps err as From does for a gRPC answer: nil stays nil, anything else
// becomes the *Error whose GRPCStatus is sent.
func GRPC(err error) error {
	if err == nil {
		return nil
	}
	return From(err)
}
