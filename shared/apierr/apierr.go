// Package apierr is the error catalogue of the chall-manager REST contract
// (docs/contract.md §2): every error the API can answer with, as a value that carries
// its gRPC code, HTTP status and google.rpc.Status details, and the writers that
// put it on the wire exactly as grpc-gateway's default error handler does.
package apierr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Code is a gRPC status code (google.rpc.Code).
type Code int32

// The gRPC codes, named like google.golang.org/grpc/codes.
const (
	CodeOK                 Code = 0
	CodeCanceled           Code = 1
	CodeUnknown            Code = 2
	CodeInvalidArgument    Code = 3
	CodeDeadlineExceeded   Code = 4
	CodeNotFound           Code = 5
	CodeAlreadyExists      Code = 6
	CodePermissionDenied   Code = 7
	CodeResourceExhausted  Code = 8
	CodeFailedPrecondition Code = 9
	CodeAborted            Code = 10
	CodeOutOfRange         Code = 11
	CodeUnimplemented      Code = 12
	CodeInternal           Code = 13
	CodeUnavailable        Code = 14
	CodeDataLoss           Code = 15
	CodeUnauthenticated    Code = 16
)

var codeNames = [...]string{"OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
	"AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition", "Aborted", "OutOfRange",
	"Unimplemented", "Internal", "Unavailable", "DataLoss", "Unauthenticated"}

// String is the code's name as grpc-go spells it (for logs and span attributes).
func (c Code) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return "Code(" + strconv.Itoa(int(c)) + ")"
}

// StatusClientClosedRequest is the non-standard 499 grpc-gateway answers for
// a cancelled call.
const StatusClientClosedRequest = 499

// HTTPStatusFromCode maps a gRPC code to the HTTP status grpc-gateway v2 uses
// (runtime.HTTPStatusFromCode). FailedPrecondition is 400, not 412.
func HTTPStatusFromCode(c Code) int {
	switch c {
	case CodeOK:
		return http.StatusOK
	case CodeCanceled:
		return StatusClientClosedRequest
	case CodeUnknown:
		return http.StatusInternalServerError
	case CodeInvalidArgument:
		return http.StatusBadRequest
	case CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case CodeNotFound:
		return http.StatusNotFound
	case CodeAlreadyExists:
		return http.StatusConflict
	case CodePermissionDenied:
		return http.StatusForbidden
	case CodeUnauthenticated:
		return http.StatusUnauthorized
	case CodeResourceExhausted:
		return http.StatusTooManyRequests
	case CodeFailedPrecondition:
		return http.StatusBadRequest
	case CodeAborted:
		return http.StatusConflict
	case CodeOutOfRange:
		return http.StatusBadRequest
	case CodeUnimplemented:
		return http.StatusNotImplemented
	case CodeInternal:
		return http.StatusInternalServerError
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	case CodeDataLoss:
		return http.StatusInternalServerError
	}
	return http.StatusInternalServerError
}

// Error is one answer of the catalogue. It is immutable once built: the
// constructors return a fresh value each time.
type Error struct {
	code    Code
	message string
	// details are google.rpc error detail messages (errdetails.*), in wire order.
	details []proto.Message
	// httpStatus overrides HTTPStatusFromCode when non-zero (gateway routing
	// errors use their own).
	httpStatus int
	// header is an extra response header (WWW-Authenticate for 401).
	headerKey, headerValue string
	// cause is kept for logs and errors.Is/As; it never reaches the wire.
	cause error
}

func newError(code Code, message string, details ...proto.Message) *Error {
	return &Error{code: code, message: message, details: details}
}

// Error implements error. It shows what the client sees plus the cause, for logs.
func (e *Error) Error() string {
	reason := e.Reason()
	s := fmt.Sprintf("rpc error: code = %s desc = %s", e.code, e.message)
	if reason != "" {
		s += " (" + reason + ")"
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap returns the cause given to WithCause.
func (e *Error) Unwrap() error { return e.cause }

// WithCause returns a copy of e that wraps cause, so logs and errors.Is see
// what happened while the wire body stays the catalogue's.
func (e *Error) WithCause(cause error) *Error {
	c := *e
	c.cause = cause
	return &c
}

// Code is the gRPC code of the answer.
func (e *Error) Code() Code { return e.code }

// Message is the google.rpc.Status message.
func (e *Error) Message() string { return e.message }

// HTTPStatus is the status line of the answer.
func (e *Error) HTTPStatus() int {
	if e.httpStatus != 0 {
		return e.httpStatus
	}
	return HTTPStatusFromCode(e.code)
}

// Reason is the reason of the first google.rpc.ErrorInfo detail, or "".
func (e *Error) Reason() string {
	for _, d := range e.details {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.GetReason()
		}
	}
	return ""
}

// Details returns the detail messages in wire order (do not mutate).
func (e *Error) Details() []proto.Message { return e.details }

// Proto is the google.rpc.Status of the answer.
func (e *Error) Proto() *spb.Status {
	st := &spb.Status{Code: int32(e.code), Message: strings.ToValidUTF8(e.message, "\uFFFD")}
	for _, d := range e.details {
		a, err := anypb.New(d)
		if err != nil {
			// Text from the client (an ID echoed in metadata) may be invalid
			// UTF-8, which protobuf strings refuse: answer with the invalid
			// bytes replaced rather than panic.
			c := proto.Clone(d)
			validUTF8(c.ProtoReflect())
			a, err = anypb.New(c)
		}
		if err != nil {
			// Only unregistered message types fail here, and the catalogue
			// only uses google.rpc ones: a programming error.
			panic(fmt.Sprintf("apierr: packing %T: %v", d, err))
		}
		st.Details = append(st.Details, a)
	}
	return st
}

// wireOptions is grpc-gateway's default marshaler configuration.
var wireOptions = protojson.MarshalOptions{EmitUnpopulated: true}

// MarshalJSON renders the google.rpc.Status body exactly as grpc-gateway does
// (protojson, EmitUnpopulated: `"details":[]`, `"metadata":{}`, `"owner":""`).
func (e *Error) MarshalJSON() ([]byte, error) {
	return wireOptions.Marshal(e.Proto())
}

// Body is MarshalJSON without the error: a marshal failure falls back to the
// same constant body grpc-gateway writes.
func (e *Error) Body() []byte {
	b, err := e.MarshalJSON()
	if err != nil {
		return []byte(`{"code": 13, "message": "failed to marshal error message"}`)
	}
	return b
}

// From maps any error to the answer it gets on the wire:
// an *Error found with errors.As is used as is; context.Canceled is the 499
// Canceled answer; context.DeadlineExceeded is 504; a body over the size cap
// (*http.MaxBytesError) is InvalidArgument; anything else is the generic
// Internal error, whose body never shows the raw error text.
// From(nil) is nil.
func From(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, context.Canceled):
		return Canceled().WithCause(err)
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded().WithCause(err)
	case errors.As(err, &mbe):
		return BodyTooLarge(mbe.Limit).WithCause(err)
	}
	return Internal().WithCause(err)
}

// Write writes err as a unary error answer: Content-Type application/json,
// the mapped HTTP status, and the google.rpc.Status body.
func Write(w http.ResponseWriter, err error) {
	e := From(err)
	if e == nil {
		e = Internal()
	}
	h := w.Header()
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Set("Content-Type", "application/json")
	if e.headerKey != "" {
		h.Set(e.headerKey, e.headerValue)
	}
	w.WriteHeader(e.HTTPStatus())
	_, _ = w.Write(e.Body())
}

// StreamLine renders err as the error line of a server stream,
// `{"error":<google.rpc.Status>}`, without the trailing newline.
func StreamLine(err error) []byte {
	e := From(err)
	if e == nil {
		e = Internal()
	}
	// grpc-gateway marshals the chunk as a Go map of raw messages through
	// encoding/json, which compacts the protojson output: do the same.
	b, merr := json.Marshal(map[string]json.RawMessage{"error": e.Body()})
	if merr != nil {
		return []byte(`{"error":{"code":13,"message":"failed to marshal error message","details":[]}}`)
	}
	return b
}

// HasReason reports whether err carries an *Error whose ErrorInfo reason is reason.
func HasReason(err error, reason string) bool {
	var e *Error
	return errors.As(err, &e) && e.Reason() == reason
}

// CodeOf is the gRPC code err maps to on the wire (see From).
func CodeOf(err error) Code {
	if err == nil {
		return CodeOK
	}
	return From(err).Code()
}
