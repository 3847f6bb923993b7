package scenario

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/registry/remote"
)

// Push packs the scenario folder dir the way upstream does (one layer per
// regular file, media type FileMediaType, titled by its slash-separated path
// relative to dir; an image-spec 1.1 manifest of artifact type ArtifactType),
// pushes it to ref and tags it. A ref without tag is tagged "latest"; a ref
// with a digest is refused. It returns the manifest digest ("sha256:…").
//
// Symlinks and other special files are refused rather than silently followed
// or skipped, so what is pushed is exactly what the ChallMaker sees.
func Push(ctx context.Context, dir, ref string, opts RegistryOptions) (string, error) {
	p, err := parseRef(ref)
	if err != nil {
		return "", err
	}
	if strings.Contains(p.Target, ":") {
		return "", newErr(KindMalformedRef, ref, "cannot push to a digest reference, give a tag", nil)
	}
	files, err := listFiles(dir)
	if err != nil {
		return "", newErr(KindSpec, ref, err.Error(), err)
	}
	c := newRemoteClient(opts)
	if err := c.allowed(p); err != nil {
		return "", err
	}
	repo := c.repository(p)

	layers := make([]ocispec.Descriptor, 0, len(files))
	for _, rel := range files {
		desc, err := pushFile(ctx, repo, filepath.Join(dir, filepath.FromSlash(rel)), rel)
		if err != nil {
			return "", classify(ref, fmt.Errorf("push %s: %w", rel, err))
		}
		layers = append(layers, desc)
	}
	man, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, ArtifactType,
		oras.PackManifestOptions{Layers: layers})
	if err != nil {
		return "", classify(ref, fmt.Errorf("push manifest: %w", err))
	}
	if err := repo.Tag(ctx, man, p.Target); err != nil {
		return "", classify(ref, fmt.Errorf("tag %s: %w", p.Target, err))
	}
	return man.Digest.String(), nil
}

// listFiles returns the regular files under dir as sorted slash paths.
func listFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s is not a regular file (symlinks and special files cannot be part of a scenario)", path)
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%s holds no file", dir)
	}
	return files, nil
}

// pushFile streams one file as a layer; it reads the file twice (digest,
// then upload) rather than buffering binaries of tens of MiB in memory.
func pushFile(ctx context.Context, repo *remote.Repository, path, title string) (ocispec.Descriptor, error) {
	f, err := os.Open(path)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{
		MediaType:   FileMediaType,
		Digest:      digest.NewDigest(digest.SHA256, h),
		Size:        n,
		Annotations: map[string]string{ocispec.AnnotationTitle: title},
	}
	exists, err := repo.Exists(ctx, desc)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	if exists {
		return desc, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, repo.Push(ctx, desc, io.LimitReader(f, n))
}
