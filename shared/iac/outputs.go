package iac

import (
	"errors"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

// ErrBadOutputs is wrapped by every error of ParseOutputs.
var ErrBadOutputs = errors.New("invalid scenario outputs")

// ParseOutputs applies the output rules of docs/contract.md §7.4 to the outputs of the root stack,
// without upstream's bugs. The rules, as scenarios/README.md states them for ChallMakers:
//
//   - A value that is absent, null or Pulumi's unknown-value marker counts as absent,
//     wherever it appears. chall-manager's SDK always exports `flags`; left unset, it is
//     an output nobody resolved, which the engine stores as that marker.
//   - `connection_info` is required and must be a string (it may be empty).
//   - `flag` (deprecated), when a non-empty string, is the first flag; another type is an
//     error (upstream panics).
//   - `flags`, when an array, adds its non-empty string elements after `flag`, in order,
//     without de-duplication; a non-string element is an error (as upstream). Any other
//     type is ignored as upstream ignores it, and reported in Outputs.Ignored so that the
//     operator sees it in the logs.
//
// Empty flags are dropped: they would accept an empty submission. Errors wrap
// ErrBadOutputs; nothing panics.
func ParseOutputs(outs map[string]any) (Outputs, error) {
	var o Outputs
	ci := present(outs["connection_info"])
	if ci == nil {
		return o, fmt.Errorf("%w: connection_info is missing", ErrBadOutputs)
	}
	s, ok := ci.(string)
	if !ok {
		return o, fmt.Errorf("%w: connection_info must be a string, got %s", ErrBadOutputs, typeName(ci))
	}
	o.ConnectionInfo = s

	if f := present(outs["flag"]); f != nil {
		s, ok := f.(string)
		if !ok {
			return Outputs{}, fmt.Errorf("%w: flag must be a string, got %s", ErrBadOutputs, typeName(f))
		}
		if s != "" {
			o.Flags = append(o.Flags, s)
		}
	}

	if fs := present(outs["flags"]); fs != nil {
		arr, ok := fs.([]any)
		if !ok {
			o.Ignored = append(o.Ignored, fmt.Sprintf("flags is %s, not an array of strings: ignored", article(typeName(fs))))
			return o, nil
		}
		for _, v := range arr {
			v = present(v)
			if v == nil {
				continue
			}
			s, ok := v.(string)
			if !ok {
				return Outputs{}, fmt.Errorf("%w: invalid flag type for %v, should be a string", ErrBadOutputs, v)
			}
			if s != "" {
				o.Flags = append(o.Flags, s)
			}
		}
	}
	return o, nil
}

// present is v, or nil when v stands for no value: null or the engine's unknown marker.
func present(v any) any {
	if s, ok := v.(string); ok && s == plugin.UnknownStringValue {
		return nil
	}
	return v
}

// typeName names a decoded JSON value's type the way a ChallMaker writes outputs.
func typeName(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64, int, int64:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func article(noun string) string {
	if noun != "" && (noun[0] == 'a' || noun[0] == 'o') {
		return "an " + noun
	}
	return "a " + noun
}
