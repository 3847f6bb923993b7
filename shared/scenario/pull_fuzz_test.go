package scenario

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote"
)

// FuzzPullManifest serves an arbitrary manifest from a registry on loopback
// (blobs: a few fixed files) and pulls it: whatever the manifest says, the
// pull writes only regular files inside its folder, never more than the
// cap, and refuses with this package's errors.
func FuzzPullManifest(f *testing.F) {
	blobs := map[digest.Digest][]byte{}
	layer := func(title, body string) ocispec.Descriptor {
		d := digest.FromString(body)
		blobs[d] = []byte(body)
		return ocispec.Descriptor{MediaType: FileMediaType, Digest: d, Size: int64(len(body)), Annotations: map[string]string{ocispec.AnnotationTitle: title}}
	}
	man := func(layers ...ocispec.Descriptor) []byte {
		b, _ := json.Marshal(ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, ArtifactType: ArtifactType,
			Config: ocispec.DescriptorEmptyJSON, Layers: layers,
		})
		return b
	}
	py := layer("Pulumi.yaml", "name: x\nruntime: go\n")
	f.Add(man(py, layer("main.go", "package main\n")))
	f.Add(man(py, layer("../escape", "x")))
	f.Add(man(py, layer("a/b", "y"), layer("a", "z")))
	lying := layer("big", strings.Repeat("b", 5000))
	lying.Size = 10
	f.Add(man(py, lying))
	neg := layer("neg", "n")
	neg.Size = -1
	f.Add(man(py, neg))
	md5 := layer("md5", "m")
	md5.Digest = "md5:0cc175b9c0f1b6a831c399e269772661"
	f.Add(man(py, md5))
	f.Add([]byte(`{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`))
	f.Add([]byte(`{}`))

	var current []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
			w.Write(current)
		case strings.Contains(r.URL.Path, "/blobs/"):
			b, ok := blobs[digest.Digest(r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:])]
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Write(b)
		default:
			http.NotFound(w, r)
		}
	}))
	f.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	const max = 4096
	parent := f.TempDir()
	dst := filepath.Join(parent, "dst")
	f.Fuzz(func(t *testing.T, manifest []byte) {
		current = manifest // one worker process runs one input at a time
		repo, err := remote.NewRepository(host + "/fuzz/scenario")
		if err != nil {
			t.Fatal(err)
		}
		repo.PlainHTTP = true
		desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromBytes(manifest), Size: int64(len(manifest))}
		if err := os.RemoveAll(dst); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		err = pull(context.Background(), host+"/fuzz/scenario:latest", repo, desc, dst, max)
		if err != nil && KindOf(err) == KindUnknown {
			t.Fatalf("error outside the catalogue: %v", err)
		}
		if entries, _ := os.ReadDir(parent); len(entries) != 1 {
			t.Fatalf("something was written next to the folder: %v", entries)
		}
		if n := treeSize(t, dst); n > max {
			t.Fatalf("%d bytes written, cap %d", n, max)
		}
	})
}
