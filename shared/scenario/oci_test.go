package scenario

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/challfn/challfn/internal/registry"
)

func TestPushLayout(t *testing.T) {
	reg := startRegistry(t, registry.Options{})
	dir := writeDir(t, map[string]string{
		"Pulumi.yaml":      "name: x\nruntime: go\n",
		"main.go":          "package main\n",
		"sub/dir/file.txt": "hello",
	})
	ref := reg.Host() + "/scn/layout:v1"
	dg := mustPush(t, dir, ref, RegistryOptions{PlainHTTP: true})

	c := newRemoteClient(RegistryOptions{PlainHTTP: true})
	p, repo, desc, err := c.resolve(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != dg || p.Target != "v1" {
		t.Fatalf("resolved %s (target %s), pushed %s", desc.Digest, p.Target, dg)
	}
	raw, err := content.FetchAll(t.Context(), repo.Manifests(), desc)
	if err != nil {
		t.Fatal(err)
	}
	var man ocispec.Manifest
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	if man.MediaType != ocispec.MediaTypeImageManifest || man.ArtifactType != ArtifactType {
		t.Fatalf("manifest media type %q artifact type %q", man.MediaType, man.ArtifactType)
	}
	if man.Config.MediaType != ocispec.MediaTypeEmptyJSON {
		t.Fatalf("config media type %q, want the image-spec 1.1 empty config", man.Config.MediaType)
	}
	var titles []string
	for _, l := range man.Layers {
		if l.MediaType != FileMediaType {
			t.Fatalf("layer media type %q", l.MediaType)
		}
		titles = append(titles, l.Annotations[ocispec.AnnotationTitle])
	}
	want := []string{"Pulumi.yaml", "main.go", "sub/dir/file.txt"}
	if !slices.Equal(titles, want) {
		t.Fatalf("titles %v, want %v", titles, want)
	}

	// Pushing to a digest reference makes no sense and is refused.
	_, err = Push(t.Context(), dir, reg.Host()+"/scn/layout@"+dg, RegistryOptions{PlainHTTP: true})
	wantKind(t, err, KindMalformedRef)
}

func TestResolve(t *testing.T) {
	reg := startRegistry(t, registry.Options{})
	h := reg.Host()
	opts := RegistryOptions{PlainHTTP: true}
	d1 := mustPush(t, writeDir(t, map[string]string{"Pulumi.yaml": "v: 1"}), h+"/scn/a:v1", opts)
	d2 := mustPush(t, writeDir(t, map[string]string{"Pulumi.yaml": "v: 2"}), h+"/scn/a:v2", opts)
	dl := mustPush(t, writeDir(t, map[string]string{"Pulumi.yaml": "v: latest"}), h+"/scn/a", opts)
	if d1 == d2 || d1 == dl {
		t.Fatal("fixtures must differ")
	}
	unknown := "sha256:" + strings.Repeat("a", 64)
	down := closedAddr(t)

	tests := []struct {
		name   string
		ref    string
		opts   RegistryOptions
		want   string
		kind   Kind
		detail string
	}{
		{name: "untagged means latest", ref: h + "/scn/a", want: dl},
		{name: "tag", ref: h + "/scn/a:v1", want: d1},
		{name: "digest wins over tag", ref: h + "/scn/a:v1@" + d2, want: d2},
		{name: "canonical", ref: h + "/scn/a@" + d1, want: d1},
		{name: "unknown tag", ref: h + "/scn/a:nope", kind: KindNotFound},
		{name: "unknown repository", ref: h + "/scn/none:v1", kind: KindNotFound},
		{name: "unknown digest", ref: h + "/scn/a@" + unknown, kind: KindNotFound},
		{name: "unreachable registry", ref: down + "/scn/a:v1", kind: KindUnreachable},
		{name: "no repository", ref: "just-a-name", kind: KindMalformedRef, detail: "missing registry or repository"},
		{name: "bad tag", ref: h + "/scn/a:bad tag", kind: KindMalformedRef, detail: "invalid tag"},
		{name: "bad digest", ref: h + "/scn/a@sha256:xyz", kind: KindMalformedRef, detail: "invalid digest"},
		{name: "sha512 digest", ref: h + "/scn/a@sha512:" + strings.Repeat("a", 128), kind: KindMalformedRef, detail: "use sha256"},
		{name: "allowed registry", ref: h + "/scn/a:v1", opts: RegistryOptions{AllowedRegistries: []string{"other.example", strings.ToUpper(h)}}, want: d1},
		{name: "registry not allowed", ref: h + "/scn/a:v1", opts: RegistryOptions{AllowedRegistries: []string{"registry.example:5000"}}, kind: KindNotAllowed, detail: h},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, Config{Registry: tt.opts})
			got, err := m.Resolve(t.Context(), tt.ref)
			if tt.kind != KindUnknown {
				se := wantKind(t, err, tt.kind)
				if !strings.Contains(se.Detail, tt.detail) {
					t.Fatalf("detail %q does not mention %q", se.Detail, tt.detail)
				}
				if se.Ref != tt.ref {
					t.Fatalf("error ref %q, want %q", se.Ref, tt.ref)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("digest %s, want %s", got, tt.want)
			}
		})
	}
}

func TestResolveMovingTag(t *testing.T) {
	reg := startRegistry(t, registry.Options{})
	ref := reg.Host() + "/scn/moving:latest"
	opts := RegistryOptions{PlainHTTP: true}
	m := newManager(t, Config{})
	d1 := mustPush(t, writeDir(t, map[string]string{"f": "1"}), ref, opts)
	if got, err := m.Resolve(t.Context(), ref); err != nil || got != d1 {
		t.Fatalf("first resolve %s %v, want %s", got, err, d1)
	}
	d2 := mustPush(t, writeDir(t, map[string]string{"f": "2"}), ref, opts)
	if got, err := m.Resolve(t.Context(), ref); err != nil || got != d2 {
		t.Fatalf("after moving the tag: %s %v, want %s (no stale cache)", got, err, d2)
	}
}

func TestAuth(t *testing.T) {
	reg := startRegistry(t, registry.Options{Username: "maker", Password: "s3cret"})
	ref := reg.Host() + "/scn/private:v1"
	good := RegistryOptions{PlainHTTP: true, Username: "maker", Password: "s3cret"}

	_, err := Push(t.Context(), writeDir(t, map[string]string{"f": "x"}), ref, RegistryOptions{PlainHTTP: true})
	wantKind(t, err, KindAuth)
	dg := mustPush(t, writeDir(t, map[string]string{"f": "x"}), ref, good)

	tests := []struct {
		name string
		opts RegistryOptions
		kind Kind
	}{
		{name: "no credentials", opts: RegistryOptions{}, kind: KindAuth},
		{name: "wrong password", opts: RegistryOptions{Username: "maker", Password: "nope"}, kind: KindAuth},
		{name: "only a username is anonymous", opts: RegistryOptions{Username: "maker"}, kind: KindAuth},
		{name: "credentials", opts: good},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, Config{Registry: tt.opts})
			got, err := m.Resolve(t.Context(), ref)
			if tt.kind != KindUnknown {
				wantKind(t, err, tt.kind)
				return
			}
			if err != nil || got != dg {
				t.Fatalf("resolve = %s, %v; want %s", got, err, dg)
			}
		})
	}
}
