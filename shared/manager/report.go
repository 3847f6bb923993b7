package manager

import (
	"context"
	"errors"
	"log/slog"

	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/telemetry"
)

// report writes the one log line of a failed operation, with its cause (the whole error
// chain: the engine's summary, the etcd error, ...) and, from ctx, the challenge id,
// identity and trace id. Failures on challfn's side, the ones answered 5xx or retried as
// events, are ERROR, and so is every failed engine operation, a preview answered 400
// included; a request refused for what it asked (4xx) or abandoned by its client is INFO. Every exported operation defers it on its named error, so no failure goes out
// unexplained and none is logged twice; code inside logs only what it does not return.
func (m *Manager) report(ctx context.Context, op string, err error) {
	if err == nil {
		return
	}
	ctx = contextOf(ctx, err)
	code := apierr.CodeOf(err)
	level := slog.LevelError
	var oe *iac.OpError
	if (clientSide(code) || errors.Is(err, context.Canceled)) && !errors.As(err, &oe) {
		level = slog.LevelInfo
	}
	m.log.Log(ctx, level, op+" failed", "code", code.String(), "error", err.Error())
}

// clientSide tells the codes that answer a request's own fault.
func clientSide(c apierr.Code) bool {
	switch c {
	case apierr.CodeInvalidArgument, apierr.CodeNotFound, apierr.CodeAlreadyExists,
		apierr.CodeFailedPrecondition, apierr.CodeOutOfRange, apierr.CodePermissionDenied,
		apierr.CodeUnauthenticated, apierr.CodeCanceled:
		return true
	}
	return false
}

// identityError names the instance a failure happened to, for the report of an
// operation that picked the identity itself (a pool fill): its context does not have it.
type identityError struct {
	identity string
	err      error
}

func (e *identityError) Error() string { return e.err.Error() }
func (e *identityError) Unwrap() error { return e.err }

func withIdentity(identity string, err error) error {
	if err == nil {
		return nil
	}
	return &identityError{identity, err}
}

// contextOf is ctx with the identity err names (identityError), when ctx has
// none.
func contextOf(ctx context.Context, err error) context.Context {
	var ie *identityError
	if errors.As(err, &ie) && telemetry.IdentityFrom(ctx) == "" {
		return telemetry.WithIdentity(ctx, ie.identity)
	}
	return ctx
}
