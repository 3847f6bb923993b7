package api

import (
	"slices"
	"strconv"

	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/challfn/challfn/shared/apierr"
)

// CreatePoolerPaths is the path list CreateChallenge checks the pooler
// bounds with: both bounds always count.
var CreatePoolerPaths = []string{"min", "max"}

// CheckUpdateMask is upstream's CheckUpdateMask: no mask is fine; otherwise
// every path must name a field of UpdateChallengeRequest, or a sub-field of
// one of its message fields (`timeout.seconds` is valid, then ignored); paths
// into maps or scalars are not. It returns the INVALID_UPDATE_MASK error.
func CheckUpdateMask(mask *FieldMask) error {
	if mask == nil {
		return nil
	}
	fm := &fieldmaskpb.FieldMask{Paths: mask.Paths}
	if fm.IsValid(dynamicpb.NewMessage(mdUpdateChallengeRequest)) {
		return nil
	}
	return apierr.InvalidUpdateMask(mask.Paths)
}

// CheckPooler is upstream's CheckPooler (docs/contract.md §3.4): only the bounds
// named in paths are checked, violations keep upstream's order, and the
// inversion check needs both bounds in paths. max == 0 means no maximum.
func CheckPooler(paths []string, min, max int64) error {
	hasMin, hasMax := slices.Contains(paths, "min"), slices.Contains(paths, "max")
	var fv []apierr.FieldViolation
	if hasMin && min < 0 {
		fv = append(fv, apierr.FieldViolation{Field: "min", Reason: "MUST_BE_POSITIVE", Description: "Minimum boundary must be a positive integer."})
	}
	if hasMax && max < 0 {
		fv = append(fv, apierr.FieldViolation{Field: "max", Reason: "MUST_BE_POSITIVE", Description: "Maximum boundary must be a positive integer."})
	}
	if hasMin && hasMax && max > 0 && min > max {
		fv = append(fv, apierr.FieldViolation{Field: "min", Reason: "INVERTED_BOUNDARIES", Description: "When an upper bound is defined, minimum cannot exceed maximum."})
	}
	return poolerError(hasMin, hasMax, min, max, fv)
}

// poolerError is the CHALLENGE_POOLER_OOB answer of violations fv (nil
// without any), with the bounds in paths as metadata.
func poolerError(hasMin, hasMax bool, min, max int64, fv []apierr.FieldViolation) error {
	if len(fv) == 0 {
		return nil
	}
	md := map[string]string{}
	if hasMin {
		md["min"] = strconv.FormatInt(min, 10)
	}
	if hasMax {
		md["max"] = strconv.FormatInt(max, 10)
	}
	return apierr.PoolerOutOfBounds(md, fv...)
}
