package iac

import (
	"errors"
	"fmt"
)

// ErrBadOutputs is wrapped by every error of ParseOutputs.
var ErrBadOutputs = errors.New("invalid scenario outputs")

// ParseOutputs applies the output rules of contract §7.4, without upstream's bugs:
// `connection_info` is a required string; `flag` (deprecated), when present and non-empty,
// is the first flag; `flags`, when present and not null, is an array of strings appended
// after it. Any other shape is an error wrapping ErrBadOutputs, never a panic.
func ParseOutputs(outs map[string]any) (Outputs, error) {
	var o Outputs
	ci, ok := outs["connection_info"]
	if !ok || ci == nil {
		return o, fmt.Errorf("%w: connection_info is missing", ErrBadOutputs)
	}
	s, ok := ci.(string)
	if !ok {
		return o, fmt.Errorf("%w: connection_info must be a string, got %T", ErrBadOutputs, ci)
	}
	o.ConnectionInfo = s

	if f, ok := outs["flag"]; ok && f != nil {
		s, ok := f.(string)
		if !ok {
			return Outputs{}, fmt.Errorf("%w: flag must be a string, got %T", ErrBadOutputs, f)
		}
		// An empty flag would accept an empty submission: never intended, so dropped.
		if s != "" {
			o.Flags = append(o.Flags, s)
		}
	}

	if fs, ok := outs["flags"]; ok && fs != nil {
		arr, ok := fs.([]any)
		if !ok {
			return Outputs{}, fmt.Errorf("%w: flags must be an array of strings, got %T", ErrBadOutputs, fs)
		}
		for _, v := range arr {
			s, ok := v.(string)
			if !ok {
				return Outputs{}, fmt.Errorf("%w: invalid flag type for %v, should be a string", ErrBadOutputs, v)
			}
			o.Flags = append(o.Flags, s)
		}
	}
	return o, nil
}
