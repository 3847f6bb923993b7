// Package config reads challfn's configuration from the environment, in one
// place, so that every function and the local run agree on names and defaults
// (the table in docs/ARCHITECTURE.md).
package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/challfn/challfn/shared/sandbox"
)

// Config is the whole configuration of a challfn function.
type Config struct {
	EtcdEndpoints []string
	EtcdUsername  string
	EtcdPassword  string
	EtcdPrefix    string
	LockTTL       time.Duration

	PulumiBinary     string
	PulumiBackendURL string
	PulumiPassphrase string
	DeployTimeout    time.Duration
	// EngineConcurrency bounds the engine processes one function instance
	// runs at once (iac.Config.MaxProcesses).
	EngineConcurrency int64

	ScenarioStoreURL string
	CacheDir         string
	OCIInsecure      bool
	OCIUsername      string
	OCIPassword      string
	OCIAllowed       []string
	ScenarioMaxBytes int64
	MaxRequestBytes  int64
	EventsSinkURL    string
	// PubSubEmulator is PUBSUB_EMULATOR_HOST (host:port): pubsub:// events go
	// to this emulator, as Google's client libraries do.
	PubSubEmulator string
	APITokens      []string
	OrphanGrace    time.Duration
	// Ceilings of what an organiser may ask for (shared/api.Limits).
	PoolMinLimit       int64
	PoolMaxLimit       int64
	AdditionalMaxBytes int64
	Debug              bool
	// ScenarioSandbox is SCENARIO_SANDBOX: how scenario programs and engine process
	// trees are contained (shared/sandbox: auto, require, off).
	ScenarioSandbox sandbox.Mode
	// SandboxBin is CHALLFN_SANDBOX_BIN: challfn-sandbox, when it is not next to the
	// Pulumi CLI nor on PATH.
	SandboxBin string
}

// DefaultEngineConcurrency is ENGINE_CONCURRENCY's default: two engine
// processes per CPU the Go runtime may use (GOMAXPROCS follows the
// container's CPU limit), at least two. An engine process is CPU-bound
// (~0.5 CPU-second per deployment of a small scenario here) and waits on its
// plugins half of the time.
func DefaultEngineConcurrency() int64 { return int64(max(2, 2*runtime.GOMAXPROCS(0))) }

// DefaultDeployTimeout is DEPLOY_TIMEOUT's default, the longest one engine
// operation runs and the longest a PATCH or DELETE of a challenge waits for
// the instance work it started: under the 600 s request timeout of Knative, of
// Cloud Run as deployed here and of the CTFd plugin, with a minute left to
// answer. shared/iac and shared/manager use it when not told otherwise.
const DefaultDeployTimeout = 540 * time.Second

// Getenv is the source of variables; os.Getenv in production, a map in tests.
type Getenv func(string) string

// FromEnv reads the configuration from the process environment.
func FromEnv() (Config, error) { return Load(os.Getenv) }

// Load reads the configuration from env. Secrets given as files
// (`*_FILE`) win over plain variables so that Kubernetes/Cloud Run secret
// mounts work without putting secrets into the environment.
func Load(env Getenv) (Config, error) {
	var errs []error
	c := Config{
		EtcdEndpoints:    list(env("ETCD_ENDPOINTS")),
		EtcdUsername:     env("ETCD_USERNAME"),
		EtcdPrefix:       or(env("ETCD_PREFIX"), "/challfn"),
		PulumiBinary:     or(env("CHALLFN_PULUMI"), "pulumi"),
		PulumiBackendURL: env("PULUMI_BACKEND_URL"),
		ScenarioStoreURL: env("SCENARIO_STORE_URL"),
		CacheDir:         env("CACHE_DIR"),
		OCIUsername:      env("OCI_USERNAME"),
		OCIAllowed:       list(env("OCI_ALLOWED_REGISTRIES")),
		EventsSinkURL:    env("EVENTS_SINK_URL"),
		PubSubEmulator:   env("PUBSUB_EMULATOR_HOST"),
	}
	var err error
	if c.EtcdPassword, err = secret(env, "ETCD_PASSWORD"); err != nil {
		errs = append(errs, err)
	}
	if c.OCIPassword, err = secret(env, "OCI_PASSWORD"); err != nil {
		errs = append(errs, err)
	}
	if c.PulumiPassphrase, err = secret(env, "PULUMI_CONFIG_PASSPHRASE"); err != nil {
		errs = append(errs, err)
	}
	tokens, err := secret(env, "API_TOKENS")
	if err != nil {
		errs = append(errs, err)
	}
	c.APITokens = list(strings.ReplaceAll(tokens, "\n", ","))

	c.LockTTL, errs = duration(env, "LOCK_TTL", 10*time.Second, errs)
	c.DeployTimeout, errs = duration(env, "DEPLOY_TIMEOUT", DefaultDeployTimeout, errs)
	c.EngineConcurrency, errs = integer(env, "ENGINE_CONCURRENCY", DefaultEngineConcurrency(), errs)
	c.OrphanGrace, errs = duration(env, "JANITOR_ORPHAN_GRACE", 10*time.Minute, errs)
	c.OCIInsecure, errs = boolean(env, "OCI_INSECURE", errs)
	c.Debug, errs = boolean(env, "CHALLFN_DEBUG", errs)
	c.ScenarioMaxBytes, errs = integer(env, "SCENARIO_MAX_BYTES", 256<<20, errs)
	c.MaxRequestBytes, errs = integer(env, "MAX_REQUEST_BYTES", 1<<20, errs)
	c.PoolMinLimit, errs = integer(env, "POOL_MIN_LIMIT", 100, errs)
	c.PoolMaxLimit, errs = integer(env, "POOL_MAX_LIMIT", 100_000, errs)
	c.AdditionalMaxBytes, errs = integer(env, "ADDITIONAL_MAX_BYTES", 64<<10, errs)
	if c.ScenarioSandbox, err = sandbox.ParseMode(env("SCENARIO_SANDBOX")); err != nil {
		errs = append(errs, fmt.Errorf("SCENARIO_SANDBOX: %w", err))
	}
	c.SandboxBin = env("CHALLFN_SANDBOX_BIN")

	if c.CacheDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		c.CacheDir = filepath.Join(dir, "challfn")
	}
	if c.LockTTL < time.Second {
		errs = append(errs, fmt.Errorf("LOCK_TTL must be at least 1s, got %s", c.LockTTL))
	}
	return c, errors.Join(errs...)
}

// Validate checks that what a function needs to serve requests is present.
func (c Config) Validate() error {
	var errs []error
	if len(c.EtcdEndpoints) == 0 {
		errs = append(errs, errors.New("ETCD_ENDPOINTS is required"))
	}
	if c.PulumiBackendURL == "" {
		errs = append(errs, errors.New("PULUMI_BACKEND_URL is required"))
	}
	if c.ScenarioStoreURL == "" {
		errs = append(errs, errors.New("SCENARIO_STORE_URL is required"))
	}
	return errors.Join(errs...)
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func list(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func secret(env Getenv, name string) (string, error) {
	if path := env(name + "_FILE"); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %w", name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return env(name), nil
}

func duration(env Getenv, name string, def time.Duration, errs []error) (time.Duration, []error) {
	v := env(name)
	if v == "" {
		return def, errs
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return def, append(errs, fmt.Errorf("%s: want a positive duration like 10s, got %q", name, v))
	}
	return d, errs
}

func boolean(env Getenv, name string, errs []error) (bool, []error) {
	v := env(name)
	if v == "" {
		return false, errs
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, append(errs, fmt.Errorf("%s: want true or false, got %q", name, v))
	}
	return b, errs
}

func integer(env Getenv, name string, def int64, errs []error) (int64, []error) {
	v := env(name)
	if v == "" {
		return def, errs
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return def, append(errs, fmt.Errorf("%s: want a positive integer, got %q", name, v))
	}
	return n, errs
}
