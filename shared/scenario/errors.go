package scenario

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// Kind says what went wrong, in the terms the contract needs. The manager
// layer maps kinds to the contract's errors (docs/contract.md §2.2):
//
//	KindUnreachable   validation path (create/update): 400 FAILED_PRECONDITION
//	                  "Registry is not available..." (OCI_INTERACTION, domain .../OCI);
//	                  elsewhere 500 "OCI interaction failed."
//	KindNotFound      validation path: 400 OCI_REFERENCE_NOT_FOUND; elsewhere 500 OCI interaction
//	KindAuth          validation path: 400 "Registry requires authentication..."; elsewhere 500
//	KindMalformedRef  400 OCI_REFERENCE_MALFORMED, ResourceInfo description = Detail (parser text)
//	KindOCI           500 "OCI interaction failed." (bad manifest, digest mismatch, registry 5xx...)
//	KindNotAllowed    400 SCENARIO_NON_MATCHING_SPECIFICATION, VALIDATION violation = Detail
//	                  (a challfn addition: the registry is not in OCI_ALLOWED_REGISTRIES)
//	KindTooLarge      400 SCENARIO_NON_MATCHING_SPECIFICATION (artifact over SCENARIO_MAX_BYTES)
//	KindUnsafeTitle   400 SCENARIO_NON_MATCHING_SPECIFICATION (a file name escapes the scenario)
//	KindSpec          400 SCENARIO_NON_MATCHING_SPECIFICATION, VALIDATION violation = Detail
//	                  (missing Pulumi.yaml, bad runtime, missing name/binary, failed preview)
//	KindPreprocessing 500 SCENARIO_PREPROCESSING, description = Detail (compiler output)
//	KindNotPrepared   500 INTERNAL: Get of a digest that was never registered (or whose
//	                  prepared copy was removed from the store); never compiles to recover
//	KindStore         500 INTERNAL: the scenario store or the local cache failed
//
// A cancelled or expired context stays visible through the chain:
// check errors.Is(err, context.Canceled) before looking at the kind.
type Kind int

const (
	KindUnknown Kind = iota
	KindUnreachable
	KindNotFound
	KindAuth
	KindMalformedRef
	KindOCI
	KindNotAllowed
	KindTooLarge
	KindUnsafeTitle
	KindSpec
	KindPreprocessing
	KindNotPrepared
	KindStore
)

var kindNames = [...]string{
	KindUnknown:       "unknown",
	KindUnreachable:   "registry unreachable",
	KindNotFound:      "reference not found",
	KindAuth:          "registry authentication failed",
	KindMalformedRef:  "malformed reference",
	KindOCI:           "OCI interaction failed",
	KindNotAllowed:    "registry not allowed",
	KindTooLarge:      "artifact too large",
	KindUnsafeTitle:   "unsafe file name in artifact",
	KindSpec:          "scenario does not match specification",
	KindPreprocessing: "scenario pre-processing failed",
	KindNotPrepared:   "scenario not prepared",
	KindStore:         "scenario store failure",
}

func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Error is the only error type this package returns (possibly wrapped).
type Error struct {
	Kind Kind
	// Ref is the reference (or digest, for Get) the operation was about.
	Ref string
	// Detail is the human-readable reason: the parser's text for a malformed
	// reference, the validation failure, the compiler output...
	Detail string
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string {
	msg := e.Kind.String()
	if e.Ref != "" {
		msg += " (" + e.Ref + ")"
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil && !strings.Contains(e.Detail, e.Err.Error()) {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of the first *Error in err's chain, KindUnknown if none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindUnknown
}

func newErr(k Kind, ref, detail string, cause error) *Error {
	return &Error{Kind: k, Ref: ref, Detail: detail, Err: cause}
}

// classify turns an error from an ORAS remote operation into an *Error,
// following the contract's rules: credentials missing or refused → auth,
// errdef.ErrNotFound → not found, a transport (*url.Error / net) error →
// unreachable, anything else → generic OCI interaction.
func classify(ref string, err error) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	var resp *errcode.ErrorResponse
	var noAnswer errNoAnswer
	switch {
	case errors.As(err, &noAnswer):
		return newErr(KindUnreachable, ref, noAnswer.Error(), err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return newErr(KindOCI, ref, "", err)
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		return newErr(KindAuth, ref, "registry requires credentials, none configured", err)
	case errors.As(err, &resp) && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		return newErr(KindAuth, ref, "registry refused the credentials", err)
	case errors.Is(err, errdef.ErrNotFound):
		return newErr(KindNotFound, ref, "", err)
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return newErr(KindUnreachable, ref, "", err)
	}
	return newErr(KindOCI, ref, "", err)
}
