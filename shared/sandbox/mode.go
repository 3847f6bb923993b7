package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Mode says how much containment is wanted (SCENARIO_SANDBOX).
type Mode string

const (
	// Auto: the strongest jail the machine allows; a weaker one is logged.
	Auto Mode = "auto"
	// Require: scenario programs run only in a jail with namespaces (FlavorRoot or
	// FlavorUserNS); otherwise the operation fails.
	Require Mode = "require"
	// Off: no supervisor and no jail, the engine and the program run as plain children
	// (what challfn did before; for measurements and debugging only).
	Off Mode = "off"
)

// ParseMode reads SCENARIO_SANDBOX; "" is Auto.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return Auto, nil
	case Auto, Require, Off:
		return m, nil
	default:
		return "", fmt.Errorf("sandbox: unknown mode %q (want auto, require or off)", s)
	}
}

// Flavor is the jail a program actually ran in.
type Flavor string

const (
	// FlavorRoot: namespaces made by a root language host; the program runs as
	// uid/gid 65534 (nobody), which owns nothing of challfn's.
	FlavorRoot Flavor = "root"
	// FlavorUserNS: namespaces made inside an unprivileged user namespace; the program
	// keeps the function's uid but no capability.
	FlavorUserNS Flavor = "userns"
	// FlavorNone: no namespace could be made; only the end of the program's process tree
	// is guaranteed.
	FlavorNone Flavor = "none"
)

// Variables shared/iac gives the engine, for the language host (the engine passes its
// environment to its plugins).
const (
	// EnvMode carries the Mode.
	EnvMode = "CHALLFN_SANDBOX"
	// EnvBin is the path of challfn-sandbox.
	EnvBin = "CHALLFN_SANDBOX_BIN"
	// EnvHide lists host paths (os.PathListSeparator) a jail never shows, even where they
	// lie under a directory it shows: the state folder, caches, work directories.
	EnvHide = "CHALLFN_SANDBOX_HIDE"
)

// BinName is the executable's name.
const BinName = "challfn-sandbox"

// ProgramUID and ProgramGID are the ids a FlavorRoot program runs as.
const (
	ProgramUID = 65534
	ProgramGID = 65534
)

// ErrUnavailable is returned (wrapped) when Mode Require cannot be honoured.
var ErrUnavailable = errors.New("sandbox: no jail with namespaces can be made on this machine")

// FindBin returns challfn-sandbox: explicit when given (CHALLFN_SANDBOX_BIN, read by
// shared/config), else next to each of the executables in near (the pulumi CLI, the
// language host), else on PATH.
func FindBin(explicit string, near ...string) (string, error) {
	if explicit != "" {
		return absExecutable(explicit)
	}
	for _, n := range near {
		if n == "" {
			continue
		}
		if p, err := absExecutable(filepath.Join(filepath.Dir(n), BinName)); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(BinName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("sandbox: %s not found next to %v nor on PATH (scripts/install-pulumi.sh builds it)", BinName, near)
}

// absExecutable is p as an absolute path with its symbolic links resolved:
// the jail binds this very file, and a link would point outside it.
func absExecutable(p string) (string, error) {
	p, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	st, err := os.Stat(p)
	if err != nil {
		return "", fmt.Errorf("sandbox: %w", err)
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("sandbox: %s is not an executable", p)
	}
	return p, nil
}

// HideList joins paths for EnvHide, leaving out empty ones.
func HideList(paths ...string) string {
	var out []string
	for _, p := range paths {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, string(os.PathListSeparator))
}
