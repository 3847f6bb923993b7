package config

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/challfn/challfn/shared/sandbox"
)

// Langhost is the configuration of the language host, a process of its own that the
// Pulumi engine starts with the function's environment plus what shared/iac adds for
// it (the sandbox.Env* variables). Nothing in it is secret.
type Langhost struct {
	// CacheDir is CHALLFN_LANGHOST_CACHE: where compiled programs are kept; default
	// <user cache dir>/challfn/langhost.
	CacheDir string
	// Sandbox is how each program is contained (set by shared/iac from SCENARIO_SANDBOX).
	Sandbox sandbox.Mode
	// SandboxBin is challfn-sandbox as shared/iac found it; "" looks next to the host.
	SandboxBin string
	// Hide lists host paths a jail never shows (the scenario cache, the state folder).
	Hide []string
}

// LoadLanghost reads the language host's configuration from getenv.
func LoadLanghost(getenv func(string) string) (Langhost, error) {
	l := Langhost{CacheDir: getenv("CHALLFN_LANGHOST_CACHE"), SandboxBin: getenv(sandbox.EnvBin)}
	if l.CacheDir == "" {
		l.CacheDir = defaultLanghostCache()
	}
	if v := getenv(sandbox.EnvHide); v != "" {
		l.Hide = filepath.SplitList(v)
	}
	var err error
	if l.Sandbox, err = sandbox.ParseMode(getenv(sandbox.EnvMode)); err != nil {
		return l, fmt.Errorf("%s: %w", sandbox.EnvMode, err)
	}
	return l, nil
}

func defaultLanghostCache() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "challfn", "langhost")
	}
	return filepath.Join(os.TempDir(), "challfn-langhost")
}
