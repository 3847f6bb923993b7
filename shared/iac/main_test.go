package iac

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// repoRoot is the checkout root; pulumiBin the CLI built by scripts/install-pulumi.sh.
var repoRoot, pulumiBin string

// helperEnv makes the test binary act as a second challfn process (see runHelper).
const helperEnv = "IAC_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	root, err := findRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "iac tests:", err)
		os.Exit(1)
	}
	repoRoot = root
	pulumiBin = filepath.Join(root, ".bin", "pulumi")
	// The real engine is required, never skipped: install it (a no-op when present; the
	// language host is rebuilt so that tests always run the current one).
	cmd := exec.Command("bash", filepath.Join(root, "scripts", "install-pulumi.sh"))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "iac tests: scripts/install-pulumi.sh failed:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "install-pulumi.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("repository root not found above the working directory")
		}
		dir = parent
	}
}

// runHelper destroys one stack from a fresh process with its own Engine, proving that the
// state in the backend is all another process needs.
func runHelper() int {
	e, err := New(Config{
		PulumiBin:  os.Getenv("IAC_TEST_PULUMI"),
		BackendURL: os.Getenv("IAC_TEST_BACKEND"),
		Passphrase: os.Getenv("IAC_TEST_PASSPHRASE"),
	})
	if err == nil {
		err = e.DestroyStack(context.Background(), os.Getenv("IAC_TEST_PROJECT"), os.Getenv("IAC_TEST_IDENTITY"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	return 0
}
