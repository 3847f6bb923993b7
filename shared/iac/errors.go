package iac

import (
	"errors"
	"fmt"
)

// OpError is a failed engine operation. Summary is short and human (the engine's error
// diagnostics, or the last lines of its output); Log holds the engine's whole output, for
// the server's logs only: it may show paths, environment details and program output, so it
// must not be sent to API clients.
type OpError struct {
	Op      string // "create", "update", "destroy", "preview", "list", ...
	Stack   string // fully qualified stack name, when there is one
	Summary string
	Log     string
	Err     error // the underlying cause (exit status, timeout, bad outputs, ...)
}

func (e *OpError) Error() string {
	s := "iac: " + e.Op
	if e.Stack != "" {
		s += " " + e.Stack
	}
	if e.Summary != "" {
		return s + ": " + e.Summary
	}
	return fmt.Sprintf("%s: %v", s, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// ErrStackLocked is returned (wrapped) when another engine holds the stack's
// lock: a live one, or a dead one whose lock is not stale yet (see stale.go).
// Nothing was done; the same operation succeeds later.
var ErrStackLocked = errors.New("the stack is locked by another engine")

// ErrOldNotDestroyed is returned (wrapped) by a blue-green update whose new stack is up but
// whose old stack could not be destroyed: the new identity and outputs returned with it are
// valid, and the old stack is left for the janitor (see ListStacks, DestroyStack).
var ErrOldNotDestroyed = errors.New("new instance is up but the old one could not be destroyed")

// ErrCleanup is wrapped in a create's error when destroying what the failed create left
// also failed: the stack may still exist in the backend.
var ErrCleanup = errors.New("cleanup after a failed create failed")

// ErrUnknownStrategy is returned by Update for a strategy it does not know.
var ErrUnknownStrategy = errors.New("unknown update strategy")
