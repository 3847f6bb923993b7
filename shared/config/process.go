package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Process is the configuration of a function process itself, read before it
// serves anything: where it listens, which registered function it serves, and
// how it logs and flushes telemetry. Config is the rest, what serving needs.
//
// The standard OTEL_* variables and the platform's K_SERVICE, K_REVISION and
// K_CONFIGURATION are not here: the OpenTelemetry SDK reads them itself, as its
// specification says, and shared/telemetry only names the resource with them.
type Process struct {
	Port      string // PORT, default 8080 (Knative and Cloud Run set it)
	LocalOnly bool   // LOCAL_ONLY=true listens on 127.0.0.1 only
	// Target is FUNCTION_TARGET, the registered function to serve; empty
	// means the binary's own. The functions framework reads the variable too.
	Target string
	// RequestTimeout is CLOUD_RUN_TIMEOUT_SECONDS, the deadline the platform
	// gives each request; 0 when unset.
	RequestTimeout time.Duration

	LogLevel    slog.Level // LOG_LEVEL (slog syntax: debug, info, warn, error, info+2), default info
	LogSourceID bool       // LOG_SOURCE_ID=true lets source_id appear in logs

	// FlushTimeout is CHALLFN_TELEMETRY_FLUSH_TIMEOUT, the bound of the
	// telemetry flush before each response; 0 leaves shared/telemetry's default.
	FlushTimeout time.Duration
	// GCPDetector is CHALLFN_GCP_DETECTOR=true: describe the instance with the
	// GCP resource detector, which probes the metadata server.
	GCPDetector bool
}

// ProcessFromEnv reads the process configuration from the environment.
func ProcessFromEnv() (Process, error) { return LoadProcess(os.Getenv) }

// LoadProcess reads the process configuration from env. A bad value is
// reported and its default used: a process that cannot parse LOG_LEVEL should
// still start and say so in its log.
func LoadProcess(env Getenv) (Process, error) {
	var errs []error
	p := Process{
		Port:   or(env("PORT"), "8080"),
		Target: env("FUNCTION_TARGET"),
	}
	p.LocalOnly, errs = boolean(env, "LOCAL_ONLY", errs)
	p.LogSourceID, errs = boolean(env, "LOG_SOURCE_ID", errs)
	p.GCPDetector, errs = boolean(env, "CHALLFN_GCP_DETECTOR", errs)
	p.FlushTimeout, errs = duration(env, "CHALLFN_TELEMETRY_FLUSH_TIMEOUT", 0, errs)
	if v := strings.TrimSpace(env("LOG_LEVEL")); v != "" {
		if err := p.LogLevel.UnmarshalText([]byte(v)); err != nil {
			p.LogLevel = slog.LevelInfo
			errs = append(errs, fmt.Errorf("LOG_LEVEL: want debug, info, warn or error, got %q", v))
		}
	}
	if v := env("CLOUD_RUN_TIMEOUT_SECONDS"); v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs <= 0 {
			errs = append(errs, fmt.Errorf("CLOUD_RUN_TIMEOUT_SECONDS: want a positive integer, got %q", v))
		} else {
			p.RequestTimeout = time.Duration(secs) * time.Second
		}
	}
	return p, errors.Join(errs...)
}
