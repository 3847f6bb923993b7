package langhost

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
)

// Builder compiles Go scenario sources once per content hash. Each engine operation starts
// its own language host process, so the cache lives on disk and concurrent builds of the
// same sources are serialised with a file lock.
type Builder struct {
	CacheDir string
}

// Build returns the path of the compiled program of dir, compiling it if needed.
func (b *Builder) Build(ctx context.Context, dir string) (string, error) {
	sum, err := HashSources(dir)
	if err != nil {
		return "", fmt.Errorf("hash program sources in %s: %w", dir, err)
	}
	if err := os.MkdirAll(b.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("create build cache: %w", err)
	}
	out := filepath.Join(b.CacheDir, sum)
	if isExecutable(out) {
		return out, nil
	}

	unlock, err := lockFile(out + ".lock")
	if err != nil {
		return "", err
	}
	defer unlock()
	if isExecutable(out) { // built by another host while we waited
		return out, nil
	}

	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("compile Go program: go toolchain not found: %w", err)
	}
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", tmp, ".")
	cmd.Dir = dir
	// The compiler needs no credential of challfn's.
	cmd.Env = append(ProgramEnviron(os.Environ()), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("compile Go program in %s: %w\n%s", dir, err, strings.TrimSpace(stderr.String()))
	}
	if err := os.Rename(tmp, out); err != nil {
		_ = os.Remove(tmp)
		return "", fmt.Errorf("store compiled program: %w", err)
	}
	return out, nil
}

// HashSources is a content hash of what `go build` reads in dir: Go files, go.mod, go.sum
// and any other file a program may embed; stack config files, hidden entries and a
// previously built `main` are left out. The Go version is part of the key.
func HashSources(dir string) (string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != dir && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "main" || (strings.HasPrefix(name, "Pulumi.") && name != "Pulumi.yaml" && name != "Pulumi.yml") {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	h := sha256.New()
	fmt.Fprintf(h, "go=%s/%s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	for _, rel := range files {
		f, err := os.Open(filepath.Join(dir, rel))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00", filepath.ToSlash(rel))
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}

func lockFile(p string) (func(), error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("take build lock: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
