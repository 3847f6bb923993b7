package api

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/challfn/challfn/shared/apierr"
)

// What an organiser may ask for is bounded, so that one request can neither make the
// system deploy without end nor store a value that later breaks it. Upstream bounds
// none of these; every refusal is a 400 in the contract's shape, before anything is
// stored. The README's "Limits" table lists them.

// Limits are the configured ceilings (shared/config: POOL_MIN_LIMIT, POOL_MAX_LIMIT,
// ADDITIONAL_MAX_BYTES). The zero value of a field means its default.
type Limits struct {
	// PoolMin is the largest `min`: pooled instances are deployed ahead of any player.
	PoolMin int64
	// PoolMax is the largest `max` (0, no maximum, stays allowed).
	PoolMax int64
	// AdditionalBytes bounds the configuration a scenario gets: the JSON of the
	// challenge's additional merged with an instance's, as the language host hands it
	// to the program (inside one environment variable, which Linux caps at 128 KiB).
	AdditionalBytes int
}

// Defaults of Limits.
const (
	DefaultPoolMinLimit        = 100
	DefaultPoolMaxLimit        = 100_000
	DefaultAdditionalMaxBytes  = 64 << 10
	MaxTimeout                 = 10 * 365 * 24 * time.Hour
	MinTimeout                 = time.Second
	maxAdditionalBytesAnywhere = 96 << 10 // what fits one environment variable with the rest of the config
)

// MaxUntil is the latest `until`: the expiry index stores instants as Unix nanoseconds,
// which end in 2262.
var MaxUntil = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

func (l Limits) withDefaults() Limits {
	if l.PoolMin <= 0 {
		l.PoolMin = DefaultPoolMinLimit
	}
	if l.PoolMax <= 0 {
		l.PoolMax = DefaultPoolMaxLimit
	}
	switch {
	case l.AdditionalBytes <= 0:
		l.AdditionalBytes = DefaultAdditionalMaxBytes
	case l.AdditionalBytes > maxAdditionalBytesAnywhere:
		l.AdditionalBytes = maxAdditionalBytesAnywhere
	}
	return l
}

// CheckPoolerLimits refuses a `min` or `max` (those named in paths) above the
// ceilings, in the shape of CheckPooler's errors (CHALLENGE_POOLER_OOB). Run it after
// CheckPooler.
func (l Limits) CheckPoolerLimits(paths []string, min, max int64) error {
	l = l.withDefaults()
	hasMin, hasMax := slices.Contains(paths, "min"), slices.Contains(paths, "max")
	var fv []apierr.FieldViolation
	if hasMin && min > l.PoolMin {
		fv = append(fv, apierr.FieldViolation{Field: "min", Reason: "TOO_LARGE",
			Description: fmt.Sprintf("Minimum boundary must be at most %d (POOL_MIN_LIMIT): pooled instances are deployed before any player asks.", l.PoolMin)})
	}
	if hasMax && max > l.PoolMax {
		fv = append(fv, apierr.FieldViolation{Field: "max", Reason: "TOO_LARGE",
			Description: fmt.Sprintf("Maximum boundary must be at most %d (POOL_MAX_LIMIT).", l.PoolMax)})
	}
	return poolerError(hasMin, hasMax, min, max, fv)
}

// CheckTimeout refuses a timeout that is not positive (instances born expired) or
// longer than MaxTimeout (durations beyond time.Duration's range arrive saturated).
// nil, no timeout, is fine.
func CheckTimeout(d *time.Duration) error {
	if d == nil {
		return nil
	}
	if *d < MinTimeout || *d > MaxTimeout {
		return apierr.InvalidArgument("timeout", "OUT_OF_RANGE",
			fmt.Sprintf("The timeout must be between %s and %s (10 years).", MinTimeout, durationText(MaxTimeout)))
	}
	return nil
}

// CheckUntil refuses an until after MaxUntil. One in the past is fine: the challenge
// is then expired (docs/contract.md §3.3).
func CheckUntil(t *time.Time) error {
	if t != nil && t.After(MaxUntil) {
		return apierr.InvalidArgument("until", "OUT_OF_RANGE",
			"The until date must be before "+MaxUntil.Format(time.RFC3339)+".")
	}
	return nil
}

// CheckAdditional refuses additional values whose merge (later maps win, as for a
// scenario's configuration) does not fit AdditionalBytes once encoded as the program
// receives it.
func (l Limits) CheckAdditional(field string, maps ...map[string]string) error {
	l = l.withDefaults()
	if n := AdditionalSize(maps...); n > l.AdditionalBytes {
		return apierr.InvalidArgument(field, "TOO_LARGE",
			fmt.Sprintf("The additional values take %d bytes once encoded for the scenario, more than the %d allowed (ADDITIONAL_MAX_BYTES).", n, l.AdditionalBytes))
	}
	return nil
}

// AdditionalSize is the size of the merged maps as the program's configuration
// carries them: a JSON object, itself a JSON string value.
func AdditionalSize(maps ...map[string]string) int {
	merged := map[string]string{}
	for _, m := range maps {
		for k, v := range m {
			merged[k] = v
		}
	}
	inner, _ := json.Marshal(merged)
	outer, _ := json.Marshal(string(inner))
	return len(outer)
}

func durationText(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
}
