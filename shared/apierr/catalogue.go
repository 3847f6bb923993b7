package apierr

import (
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
)

// Domains of the ErrorInfo details, as upstream (pkg/errors/consts.go).
const (
	Domain    = "github.com/ctfer-io/chall-manager"
	DomainOCI = Domain + "/OCI"
)

// Reasons of the ErrorInfo details. The first block is upstream's, the second
// is challfn's own (serverless needs the catalogue lacks).
const (
	ReasonInternal                = "INTERNAL_ERROR"
	ReasonChallengeAlreadyExists  = "CHALLENGE_ALREADY_EXISTS"
	ReasonChallengeNotFound       = "CHALLENGE_NOT_FOUND"
	ReasonChallengeExpired        = "CHALLENGE_EXPIRED"
	ReasonChallengeNoRenewal      = "CHALLENGE_NO_RENEWAL"
	ReasonChallengePoolerOOB      = "CHALLENGE_POOLER_OUT_OF_BOUNDS"
	ReasonChallengeInvalidUM      = "CHALLENGE_INVALID_UPDATE_MASK"
	ReasonInstanceAlreadyExists   = "INSTANCE_ALREADY_EXISTS"
	ReasonInstanceNotFound        = "INSTANCE_NOT_FOUND"
	ReasonInstanceExpired         = "INSTANCE_EXPIRED"
	ReasonOCIMalformedRef         = "OCI_REFERENCE_MALFORMED"
	ReasonOCIInteraction          = "OCI_INTERACTION"
	ReasonOCINotFound             = "OCI_REFERENCE_NOT_FOUND"
	ReasonScenarioNonMatchingSpec = "SCENARIO_NON_MATCHING_SPECIFICATION"
	ReasonScenarioPreprocess      = "SCENARIO_PREPROCESSING"

	ReasonUnavailable     = "UNAVAILABLE"
	ReasonUnauthenticated = "UNAUTHENTICATED"
	ReasonInvalidArgument = "INVALID_ARGUMENT"
)

// FieldViolation is one google.rpc.BadRequest field violation.
type FieldViolation struct {
	Field       string
	Reason      string
	Description string
}

func badRequest(fvs ...FieldViolation) *errdetails.BadRequest {
	br := &errdetails.BadRequest{}
	for _, fv := range fvs {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       fv.Field,
			Reason:      fv.Reason,
			Description: fv.Description,
		})
	}
	return br
}

func info(reason, domain string, metadata map[string]string) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{Reason: reason, Domain: domain, Metadata: metadata}
}

func resource(typ, name, description string) *errdetails.ResourceInfo {
	return &errdetails.ResourceInfo{ResourceType: typ, ResourceName: name, Description: description}
}

func precondition(typ, subject, description string) *errdetails.PreconditionFailure {
	return &errdetails.PreconditionFailure{Violations: []*errdetails.PreconditionFailure_Violation{
		{Type: typ, Subject: subject, Description: description},
	}}
}

func help(pairs ...string) *errdetails.Help {
	h := &errdetails.Help{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Links = append(h.Links, &errdetails.Help_Link{Description: pairs[i], Url: pairs[i+1]})
	}
	return h
}

// Internal is the generic 500: it says nothing about what failed.
func Internal() *Error {
	return newError(CodeInternal, "An internal error occurred.", info(ReasonInternal, Domain, nil))
}

// Canceled is the answer to a call whose client went away (HTTP 499).
func Canceled() *Error { return newError(CodeCanceled, "") }

// Unknown carries a raw error text (HTTP 500, code 2), as upstream does for
// Pulumi failures. Only use it for text meant for the caller.
func Unknown(msg string) *Error { return newError(CodeUnknown, msg) }

// BadRequest is the gateway's decode/query-parameter failure: 400, code 3, the
// parser's text, no details.
func BadRequest(msg string) *Error { return newError(CodeInvalidArgument, msg) }

// Gateway is an answer the HTTP server gives before any handler runs (a
// request it cannot parse): its status is kept, its code is the one that
// status maps to, its message the server's text.
func Gateway(status int, text string) *Error {
	code := CodeInvalidArgument
	switch status {
	case http.StatusNotImplemented:
		code = CodeUnimplemented
	case http.StatusRequestHeaderFieldsTooLarge:
		code = CodeResourceExhausted
	}
	e := newError(code, text)
	e.httpStatus = status
	return e
}

// RouteNotFound is the gateway's answer for an unknown path.
func RouteNotFound() *Error {
	e := newError(CodeNotFound, http.StatusText(http.StatusNotFound))
	return e
}

// MethodNotAllowed is the gateway's answer for a known path with a wrong
// method: HTTP 501 with code 12 (Unimplemented), as grpc-gateway does.
func MethodNotAllowed() *Error {
	return newError(CodeUnimplemented, http.StatusText(http.StatusMethodNotAllowed))
}

// ChallengeNotFound: no challenge with this ID (404).
func ChallengeNotFound(id string) *Error {
	return newError(CodeNotFound, "Challenge not found.",
		info(ReasonChallengeNotFound, Domain, map[string]string{"id": id}),
		resource("Challenge", id, "No challenge with this ID was found."),
	)
}

// ChallengeAlreadyExists: a challenge with this ID exists (409).
func ChallengeAlreadyExists(id string) *Error {
	return newError(CodeAlreadyExists, "Challenge already exists.",
		info(ReasonChallengeAlreadyExists, Domain, map[string]string{"id": id}),
		resource("Challenge", id, "A challenge with this ID already exists."),
	)
}

// ChallengeExpired: the challenge's until has passed (400, FailedPrecondition).
func ChallengeExpired(id string) *Error {
	return newError(CodeFailedPrecondition, "Challenge has expired.",
		info(ReasonChallengeExpired, Domain, map[string]string{"id": id}),
		precondition("EXPIRATION", Domain+"/Challenge", "Challenge has expired so can no longer process instance requests."),
	)
}

// ChallengeNoRenewal: the challenge has no timeout (400, FailedPrecondition).
func ChallengeNoRenewal(id string) *Error {
	return newError(CodeFailedPrecondition, "Challenge does not accept renewal.",
		info(ReasonChallengeNoRenewal, Domain, map[string]string{"id": id}),
		precondition("RENEWAL", Domain+"/Challenge", "Challenge has no timeout thus cannot be renewed."),
	)
}

// PoolerOutOfBounds: min/max incoherent (400). metadata holds "min"/"max" as
// decimal strings for the bounds that were checked; violations keep their order.
func PoolerOutOfBounds(metadata map[string]string, violations ...FieldViolation) *Error {
	return newError(CodeInvalidArgument, "Pooler configuration out of bounds.",
		info(ReasonChallengePoolerOOB, Domain, metadata),
		badRequest(violations...),
	)
}

// InvalidUpdateMask: a mask path names no field of UpdateChallengeRequest (400).
// paths are the mask's paths as stored (snake_case).
func InvalidUpdateMask(paths []string) *Error {
	return newError(CodeInvalidArgument, "Invalid update mask.",
		info(ReasonChallengeInvalidUM, Domain, map[string]string{"update-mask": MaskText(paths)}),
		badRequest(FieldViolation{Field: "update-mask", Reason: "INVALID_UPDATE_MASK", Description: "The update mask is malformed."}),
		help(
			"Protocol Buffers > Well-Known Types > Field mask", "https://protobuf.dev/reference/protobuf/google.protobuf/#field-mask",
			"AIP-161 Field masks", "https://google.aip.dev/161",
		),
	)
}

// MaskText renders a FieldMask in the text format upstream puts in the
// `update-mask` metadata (`paths:"a" paths:"b"`), without prototext's random
// spacing so the value is stable.
func MaskText(paths []string) string {
	var sb strings.Builder
	for i, p := range paths {
		if i > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("paths:")
		sb.WriteString(textQuote(p))
	}
	return sb.String()
}

// textQuote quotes like the protobuf text format encoder does.
func textQuote(s string) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if r == utf8.RuneError && n == 1 {
			r = rune(s[0])
			sb.WriteString(`\x` + strconv.FormatUint(uint64(r), 16))
			s = s[n:]
			continue
		}
		switch {
		case r == '"' || r == '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r < ' ' || r == 0x7f:
			sb.WriteString(`\x` + strconv.FormatUint(uint64(r), 16))
		default:
			sb.WriteString(s[:n])
		}
		s = s[n:]
	}
	sb.WriteByte('"')
	return sb.String()
}

func instanceMeta(challengeID, sourceID string) map[string]string {
	return map[string]string{"challenge_id": challengeID, "source_id": sourceID}
}

// InstanceAlreadyExists: the source already has an instance of this challenge (409).
// The CTFd plugin matches "already exist" in the message.
func InstanceAlreadyExists(challengeID, sourceID string) *Error {
	return newError(CodeAlreadyExists, "Instance already exists.",
		info(ReasonInstanceAlreadyExists, Domain, instanceMeta(challengeID, sourceID)),
		resource("Instance", challengeID+"/"+sourceID, "An instance with this ID already exists."),
	)
}

// InstanceNotFound: no instance for this (challenge, source) (404).
func InstanceNotFound(challengeID, sourceID string) *Error {
	return newError(CodeNotFound, "Instance not found.",
		info(ReasonInstanceNotFound, Domain, instanceMeta(challengeID, sourceID)),
		resource("Instance", challengeID+"/"+sourceID, "No instance with this ID was found."),
	)
}

// InstanceExpired: renewal refused because the instance's until passed (400).
func InstanceExpired(challengeID, sourceID string) *Error {
	return newError(CodeFailedPrecondition, "Instance can't be renewed as it expired.",
		info(ReasonInstanceExpired, Domain, instanceMeta(challengeID, sourceID)),
		precondition("EXPIRATION", Domain+"/Instance", "Instance has expired so can no longer process renewal request."),
	)
}

func ref(reference string) map[string]string { return map[string]string{"reference": reference} }

// OCIUnreachable: on scenario validation, the registry could not be reached (400, FailedPrecondition).
func OCIUnreachable(reference string) *Error {
	return newError(CodeFailedPrecondition, "Registry is not available. You might want to try again later.",
		info(ReasonOCIInteraction, DomainOCI, ref(reference)),
		badRequest(FieldViolation{Field: "scenario", Reason: ReasonOCIInteraction, Description: "Registry is unreachable."}),
	)
}

// OCIReferenceNotFound: on scenario validation, the registry has no such reference (400).
func OCIReferenceNotFound(reference string) *Error {
	return newError(CodeInvalidArgument, "Registry does not contain reference.",
		info(ReasonOCINotFound, DomainOCI, ref(reference)),
		badRequest(FieldViolation{Field: "scenario", Reason: ReasonOCINotFound, Description: "Reference not found."}),
	)
}

// OCIUnauthorized: on scenario validation, the registry refused our credentials (400, FailedPrecondition).
func OCIUnauthorized(reference string) *Error {
	return newError(CodeFailedPrecondition, "Registry requires authentication. You may not be authorized to use it.",
		info(ReasonOCIInteraction, DomainOCI, ref(reference)),
		badRequest(FieldViolation{
			Field:       "scenario",
			Reason:      ReasonOCIInteraction,
			Description: "The reference of provided scenario is hosted on a registry that requires authentication, for which credentials did not match.",
		}),
	)
}

// OCIInteraction: any other registry failure (500).
func OCIInteraction(reference string) *Error {
	return newError(CodeInternal, "OCI interaction failed.",
		info(ReasonOCIInteraction, Domain, ref(reference)),
	)
}

// OCIReferenceMalformed: the scenario reference does not parse (400);
// description is the parser's message.
func OCIReferenceMalformed(reference, description string) *Error {
	return newError(CodeInvalidArgument, "OCI reference is malformed.",
		info(ReasonOCIMalformedRef, Domain, ref(reference)),
		resource("Reference", reference, description),
		help("OCI Image Format specification GitHub repository.", "https://github.com/opencontainers/image-spec"),
	)
}

// ScenarioNonMatching: the scenario is not a valid scenario (400).
// withFieldViolation adds the BadRequest{scenario, VALIDATION, validationText}
// detail, which upstream sends only from create/update validation.
func ScenarioNonMatching(reference, validationText string, withFieldViolation bool) *Error {
	e := newError(CodeInvalidArgument, "Scenario does not match specification.",
		info(ReasonScenarioNonMatchingSpec, Domain, ref(reference)),
		resource("Scenario", reference, "A Pulumi program acting as a challenge instance deployment scenario."),
		help(
			"Definition of a Scenario.", "https://ctfer.io/docs/chall-manager/glossary/#scenario",
			"Step-by-step guide to create a Scenario.", "https://ctfer.io/docs/chall-manager/challmaker-guides/create-scenario/",
		),
	)
	if withFieldViolation {
		e.details = append(e.details, badRequest(FieldViolation{Field: "scenario", Reason: "VALIDATION", Description: validationText}))
	}
	return e
}

// ScenarioPreprocessing: fetching/compiling the scenario failed (500);
// description is the failure text (compiler output included).
func ScenarioPreprocessing(directory, reference, description string) *Error {
	return newError(CodeInternal, "Scenario pre-processing failed.",
		info(ReasonScenarioPreprocess, Domain, map[string]string{"directory": directory}),
		resource("Scenario", reference, description),
	)
}

// Unavailable: a dependency (etcd, the Pulumi backend) cannot be reached
// right now (503); the client may retry.
func Unavailable(msg string) *Error {
	return newError(CodeUnavailable, msg, info(ReasonUnavailable, Domain, nil))
}

// Unauthenticated: missing or wrong bearer token (401). The response carries
// `WWW-Authenticate: Bearer`.
func Unauthenticated() *Error {
	e := newError(CodeUnauthenticated, "Unauthenticated.", info(ReasonUnauthenticated, Domain, nil))
	e.headerKey, e.headerValue = "WWW-Authenticate", `Bearer realm="challfn"`
	return e
}

// DeadlineExceeded: the call ran out of time (504), with gRPC's message.
func DeadlineExceeded() *Error {
	return newError(CodeDeadlineExceeded, "context deadline exceeded")
}

// InvalidArgument: a request field is unusable (400). It names the field in
// both the ErrorInfo metadata and a BadRequest field violation.
func InvalidArgument(field, reason, description string) *Error {
	return newError(CodeInvalidArgument, "Invalid argument.",
		info(ReasonInvalidArgument, Domain, map[string]string{"field": field}),
		badRequest(FieldViolation{Field: field, Reason: reason, Description: description}),
	)
}

// BodyTooSlow: the request body did not arrive within timeout (400).
func BodyTooSlow(timeout time.Duration) *Error {
	return InvalidArgument("body", "TOO_SLOW", "The request body was not received within "+timeout.String()+".")
}

// BodyTooLarge: the request body exceeds limit bytes (400).
func BodyTooLarge(limit int64) *Error {
	return InvalidArgument("body", "TOO_LARGE",
		"The request body exceeds the maximum size of "+strconv.FormatInt(limit, 10)+" bytes.")
}
