package scenario

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"
)

// DefaultMaxBytes caps one scenario artifact (SCENARIO_MAX_BYTES default).
const DefaultMaxBytes int64 = 256 << 20

// maxManifestBytes bounds the manifest itself; a scenario manifest of a
// thousand files is well under 1 MiB.
const maxManifestBytes = 4 << 20

// errSizeCap is the internal signal that a read went past the cap.
var errSizeCap = errors.New("size cap reached")

// cleanTitle checks that a layer title names a file strictly inside the
// scenario folder and returns it in canonical form. A leading "./" is
// tolerated (some tools emit it); anything else that is not already clean
// ("a//b", "a/../b", "../x", "/etc/x", "", ".") is refused.
func cleanTitle(title string) (string, error) {
	t := title
	for strings.HasPrefix(t, "./") {
		t = t[2:]
	}
	switch {
	case t == "" || t == ".":
		return "", fmt.Errorf("empty file name %q", title)
	case strings.ContainsRune(t, 0):
		return "", fmt.Errorf("file name %q contains NUL", title)
	case path.IsAbs(t) || filepath.IsAbs(t):
		return "", fmt.Errorf("absolute file name %q", title)
	case path.Clean(t) != t || !filepath.IsLocal(t):
		return "", fmt.Errorf("file name %q is not a clean relative path", title)
	}
	for _, part := range strings.Split(t, "/") {
		if part == ".." || part == "." {
			return "", fmt.Errorf("file name %q escapes the scenario folder", title)
		}
	}
	return t, nil
}

// pull fetches the manifest desc from repo and writes every titled layer into
// dir (which must exist and be empty), verifying each blob's size and digest
// and never writing more than maxBytes in total.
func pull(ctx context.Context, ref string, repo *remote.Repository, desc ocispec.Descriptor, dir string, maxBytes int64) error {
	if desc.Size > maxManifestBytes {
		return newErr(KindTooLarge, ref, fmt.Sprintf("manifest of %d bytes", desc.Size), nil)
	}
	mctx, cancel := context.WithTimeout(ctx, RegistryTimeout)
	raw, err := content.FetchAll(mctx, repo.Manifests(), desc)
	err = timedOut(ctx, mctx, err)
	cancel()
	if err != nil {
		return classify(ref, fmt.Errorf("fetch manifest: %w", err))
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		return newErr(KindSpec, ref, "the reference is not an OCI image manifest", err)
	}
	if mt := firstNonEmpty(man.MediaType, desc.MediaType); mt != ocispec.MediaTypeImageManifest {
		return newErr(KindSpec, ref, fmt.Sprintf("manifest media type %q is not %s", mt, ocispec.MediaTypeImageManifest), nil)
	}

	type file struct {
		name string
		desc ocispec.Descriptor
	}
	var files []file
	seen := map[string]bool{}
	var declared int64
	for _, l := range man.Layers {
		title, ok := l.Annotations[ocispec.AnnotationTitle]
		if !ok {
			continue // upstream ignores untitled layers too
		}
		name, err := cleanTitle(title)
		if err != nil {
			return newErr(KindUnsafeTitle, ref, err.Error(), nil)
		}
		if seen[name] {
			return newErr(KindUnsafeTitle, ref, fmt.Sprintf("file %q appears twice", name), nil)
		}
		seen[name] = true
		if err := l.Digest.Validate(); err != nil || l.Digest.Algorithm() != digest.SHA256 {
			return newErr(KindOCI, ref, fmt.Sprintf("layer %q has an invalid or non-sha256 digest %q", name, l.Digest), err)
		}
		if l.Size < 0 {
			return newErr(KindOCI, ref, fmt.Sprintf("layer %q declares a negative size", name), nil)
		}
		declared += l.Size
		if declared > maxBytes {
			return newErr(KindTooLarge, ref, fmt.Sprintf("files exceed the %d bytes cap", maxBytes), nil)
		}
		files = append(files, file{name, l})
	}

	root, err := os.OpenRoot(dir)
	if err != nil {
		return newErr(KindStore, ref, "open scenario folder", err)
	}
	defer root.Close()
	budget := maxBytes
	for _, f := range files {
		n, err := fetchLayer(ctx, repo, root, f.name, f.desc, budget)
		switch {
		case errors.Is(err, errSizeCap):
			return newErr(KindTooLarge, ref, fmt.Sprintf("files exceed the %d bytes cap", maxBytes), nil)
		case err != nil:
			var se *Error
			if errors.As(err, &se) {
				if se.Ref == "" {
					se.Ref = ref
				}
				return err
			}
			return classify(ref, fmt.Errorf("fetch %s: %w", f.name, err))
		}
		budget -= n
	}
	return nil
}

// fetchLayer streams one blob into name (created exclusively, parents as
// plain directories under root), reading at most min(declared, budget)+1
// bytes so a lying registry cannot make us write more than allowed.
func fetchLayer(ctx context.Context, repo *remote.Repository, root *os.Root, name string, desc ocispec.Descriptor, budget int64) (int64, error) {
	if dirName := path.Dir(name); dirName != "." {
		if err := root.MkdirAll(dirName, 0o755); err != nil {
			return 0, newErr(KindUnsafeTitle, "", fmt.Sprintf("cannot create folder for %q", name), err)
		}
	}
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return 0, newErr(KindUnsafeTitle, "", fmt.Sprintf("cannot create file %q", name), err)
	}
	defer out.Close()

	rc, err := repo.Blobs().Fetch(ctx, desc)
	if err != nil {
		return 0, err
	}
	defer rc.Close()

	limit := min(desc.Size, budget)
	verifier := desc.Digest.Verifier()
	n, err := io.Copy(io.MultiWriter(out, verifier), io.LimitReader(rc, limit+1))
	if err != nil {
		return n, err
	}
	if n > limit {
		if limit < desc.Size {
			return n, errSizeCap
		}
		return n, fmt.Errorf("blob %s is larger than its declared %d bytes", desc.Digest, desc.Size)
	}
	if n != desc.Size {
		return n, fmt.Errorf("blob %s: got %d bytes, declared %d", desc.Digest, n, desc.Size)
	}
	if !verifier.Verified() {
		return n, fmt.Errorf("blob %s: content does not match its digest", desc.Digest)
	}
	return n, out.Close()
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
