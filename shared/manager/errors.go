package manager

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/store"
	"go.opentelemetry.io/otel/trace"
)

// This file is the one place where errors of the lower layers (scenario,
// engine, etcd) become errors of the contract (docs/contract.md §2.2).
//
// The operations return errors as they arise: the contract's own refusals
// (apierr) where a rule decides, records and etcd errors as shared/store and
// the etcd client give them, scenario errors as shared/scenario classifies
// them, and engine failures wrapped by failed, which says what failed.
// answer, deferred by every exported operation, maps them and writes the
// operation's log line.

// failure is a failed engine operation; what names it for the client
// ("Deployment of the instance").
type failure struct {
	what string
	err  error
}

func (f *failure) Error() string { return f.what + ": " + f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// failed wraps an engine error with what failed (nil stays nil).
func failed(what string, err error) error {
	if err == nil {
		return nil
	}
	return &failure{what, err}
}

// op is an exported operation, as its answer needs it.
type op struct {
	name string // for the log line: "instance creation"
	// validation: the operation registers a scenario (challenge create and
	// update), so registry problems are the client's to fix (classified 400s).
	validation bool
}

// answer maps err to the contract and logs it (report). Deferred by every
// exported operation: `defer func() { err = m.answer(ctx, o, err) }()`.
func (m *Manager) answer(ctx context.Context, o op, err error) error {
	if err == nil {
		return nil
	}
	out := m.contract(ctx, err, o.validation)
	m.report(contextOf(ctx, err), o.name, out)
	return out
}

// contract is err as the contract answers it.
func (m *Manager) contract(ctx context.Context, err error, validation bool) error {
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return err
	}
	var se *scenario.Error
	if errors.As(err, &se) {
		return m.scenarioError(err, se.Ref, validation)
	}
	var f *failure
	if errors.As(err, &f) {
		return engineError(ctx, f.err, f.what, m.o.Debug)
	}
	return storeError(err)
}

// scenarioError maps a scenario failure for ref. On the validation path
// (challenge create/update) registry problems are the client's to fix and get
// the classified 400s; elsewhere they are the generic 500 "OCI interaction
// failed." (upstream's classification happens only in validation).
func (m *Manager) scenarioError(err error, ref string, validation bool) error {
	if err == nil {
		return nil
	}
	if (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && scenario.KindOf(err) != scenario.KindUnreachable {
		return err // the caller's own deadline or cancellation
	}
	var se *scenario.Error
	detail := err.Error()
	if errors.As(err, &se) {
		detail = se.Detail
		if detail == "" && se.Err != nil {
			detail = se.Err.Error()
		}
	}
	detail = m.public(detail)
	switch scenario.KindOf(err) {
	case scenario.KindUnreachable:
		if validation {
			return apierr.OCIUnreachable(ref).WithCause(err)
		}
	case scenario.KindNotFound:
		if validation {
			return apierr.OCIReferenceNotFound(ref).WithCause(err)
		}
	case scenario.KindAuth:
		if validation {
			return apierr.OCIUnauthorized(ref).WithCause(err)
		}
	case scenario.KindMalformedRef:
		return apierr.OCIReferenceMalformed(ref, detail).WithCause(err)
	case scenario.KindNotAllowed, scenario.KindTooLarge, scenario.KindUnsafeTitle, scenario.KindSpec:
		return apierr.ScenarioNonMatching(ref, detail, validation).WithCause(err)
	case scenario.KindPreprocessing:
		return apierr.ScenarioPreprocessing("", ref, detail).WithCause(err)
	case scenario.KindNotPrepared, scenario.KindStore:
		return apierr.Internal().WithCause(err)
	}
	return apierr.OCIInteraction(ref).WithCause(err)
}

// public is engine or compiler text as a response body may carry it (see apierr.Public);
// all of it with Debug.
func (m *Manager) public(s string) string {
	if m.o.Debug {
		return s
	}
	return apierr.Public(s)
}

// engineError maps a failed Pulumi operation. Upstream returns the raw Pulumi
// text (code 2, UNKNOWN); challfn keeps the code but says only what failed and
// the trace to look at, unless debug is on: engine output can carry paths,
// program logs and secrets (docs/design.md, decision 10).
func engineError(ctx context.Context, err error, what string, debug bool) error {
	if err == nil {
		return nil
	}
	if e := storeError(err); e != err {
		return e
	}
	if errors.Is(err, iac.ErrStackLocked) {
		// Another deployment (or a crashed one, until its lock is stale)
		// holds the stack: nothing changed, a retry will do.
		return apierr.Unavailable(what + " failed: the instance is being changed by another deployment, try again later.").WithCause(err)
	}
	msg := what + " failed."
	if debug {
		var oe *iac.OpError
		if errors.As(err, &oe) && oe.Summary != "" {
			msg = what + " failed: " + oe.Summary
		} else {
			msg = what + " failed: " + err.Error()
		}
	} else if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		msg = fmt.Sprintf("%s See trace %s.", msg, sc.TraceID())
	}
	return apierr.Unknown(msg).WithCause(err)
}

// storeError maps etcd trouble: an unreachable or leaderless cluster is a
// 503 (retry later), which the contract lacks but clients handle.
func storeError(err error) error {
	if err == nil {
		return nil
	}
	var ae *apierr.Error
	if errors.As(err, &ae) {
		return err
	}
	switch {
	case errors.Is(err, store.ErrFenced), errors.Is(err, store.ErrNoReservation):
		// The lock's lease was lost (a frozen or partitioned instance);
		// another request may have done the work meanwhile.
		return apierr.Unavailable("The operation lost its lock, try again.").WithCause(err)
	case errors.Is(err, etcd.ErrUnavailable),
		errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrLeaderChanged),
		errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail),
		errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost), errors.Is(err, rpctypes.ErrGRPCNoLeader):
		return apierr.Unavailable("The coordination store (etcd) is unavailable, try again later.").WithCause(err)
	}
	if s, ok := status.FromError(errors.Unwrap(err)); ok && s.Code() == codes.Unavailable {
		return apierr.Unavailable("The coordination store (etcd) is unavailable, try again later.").WithCause(err)
	}
	if s, ok := status.FromError(err); ok && s.Code() == codes.Unavailable {
		return apierr.Unavailable("The coordination store (etcd) is unavailable, try again later.").WithCause(err)
	}
	return err
}

// The exported operations.
var (
	opChallengeCreate   = op{"challenge creation", true}
	opChallengeRetrieve = op{name: "challenge retrieval"}
	opChallengeQuery    = op{name: "challenge query"}
	opChallengeUpdate   = op{"challenge update", true}
	opChallengeDelete   = op{name: "challenge deletion"}
	opInstanceCreate    = op{name: "instance creation"}
	opInstanceRetrieve  = op{name: "instance retrieval"}
	opInstanceQuery     = op{name: "instance query"}
	opInstanceRenew     = op{name: "instance renewal"}
	opInstanceDelete    = op{name: "instance deletion"}
	opJanitor           = op{name: "janitor run"}
)
