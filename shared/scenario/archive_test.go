package scenario

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"gocloud.dev/blob"
)

func TestCleanTitle(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "Pulumi.yaml", want: "Pulumi.yaml"},
		{in: "a/b/c.go", want: "a/b/c.go"},
		{in: "./main", want: "main"},
		{in: "..data", want: "..data"},
		{in: "", bad: true},
		{in: ".", bad: true},
		{in: "./", bad: true},
		{in: "..", bad: true},
		{in: "../x", bad: true},
		{in: "a/../../x", bad: true},
		{in: "a/../b", bad: true},
		{in: "a//b", bad: true},
		{in: "a/", bad: true},
		{in: "/etc/passwd", bad: true},
		{in: "a\x00b", bad: true},
	}
	for _, tt := range tests {
		got, err := cleanTitle(tt.in)
		if tt.bad != (err != nil) || got != tt.want {
			t.Errorf("cleanTitle(%q) = %q, %v", tt.in, got, err)
		}
	}
}

type tarEntry struct {
	hdr  tar.Header
	body string
}

func makeTar(t *testing.T, entries []tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestArchiveRoundTrip(t *testing.T) {
	src := writeDir(t, map[string]string{"Pulumi.yaml": "name: x", "a/b/c.txt": "c"})
	if err := os.WriteFile(filepath.Join(src, "main"), []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := writeArchive(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := readArchive(&buf, dst, 1<<20); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]os.FileMode{"Pulumi.yaml": 0o644, "a/b/c.txt": 0o644, "main": 0o755} {
		sameFile(t, filepath.Join(src, name), filepath.Join(dst, name))
		fi, err := os.Stat(filepath.Join(dst, name))
		if err != nil || fi.Mode().Perm() != mode {
			t.Fatalf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, mode)
		}
	}
}

// TestReadArchiveRefuses: the store is a bucket others may write to, so its
// archives get the same distrust as registry content.
func TestReadArchiveRefuses(t *testing.T) {
	reg := func(name string) tar.Header { return tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644} }
	tests := []struct {
		name    string
		entries []tarEntry
		max     int64
	}{
		{name: "symlink", entries: []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "main", Linkname: "/bin/sh"}}}},
		{name: "directory entry", entries: []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755}}}},
		{name: "device", entries: []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev", Devmajor: 1, Devminor: 3}}}},
		{name: "traversal", entries: []tarEntry{{hdr: reg("../escape"), body: "x"}}},
		{name: "absolute", entries: []tarEntry{{hdr: reg("/tmp/escape"), body: "x"}}},
		{name: "duplicate", entries: []tarEntry{{hdr: reg("f"), body: "x"}, {hdr: reg("f"), body: "y"}}},
		{name: "over the cap", max: 4, entries: []tarEntry{{hdr: reg("f"), body: "12345"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			max := tt.max
			if max == 0 {
				max = 1 << 20
			}
			parent := t.TempDir()
			dst := filepath.Join(parent, "dst")
			if err := os.Mkdir(dst, 0o755); err != nil {
				t.Fatal(err)
			}
			err := readArchive(bytes.NewReader(makeTar(t, tt.entries)), dst, max)
			if err == nil {
				t.Fatal("archive accepted")
			}
			if _, err := os.Lstat(filepath.Join(parent, "escape")); err == nil {
				t.Fatal("a file escaped the folder")
			}
		})
	}
}

// TestGetTamperedStore: a bad archive in the store is a store error, and
// nothing reaches the cache.
func TestGetTamperedStore(t *testing.T) {
	store := newStore(t)
	m := newManager(t, Config{StoreURL: store})
	d := digest.FromString("tampered")
	bucket, err := blob.OpenBucket(context.Background(), store)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	bad := makeTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "Pulumi.yaml", Linkname: "/etc/passwd"}}})
	if err := bucket.WriteAll(t.Context(), storeKey(d), bad, nil); err != nil {
		t.Fatal(err)
	}
	_, err = m.Get(t.Context(), d.String())
	se := wantKind(t, err, KindStore)
	if !strings.Contains(se.Error(), "not a regular file") {
		t.Fatalf("error %v", se)
	}
	entries, _ := os.ReadDir(m.cfg.CacheDir)
	if len(entries) != 0 {
		t.Fatalf("cache holds %v after a failed load", entries)
	}
}
