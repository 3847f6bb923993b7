package scenario

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawTar is an uncompressed tar of entries (bodies of regular files only).
func rawTar(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg && h.Size == 0 {
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
	return buf.Bytes()
}

// zw is reused: a new gzip writer allocates about a megabyte of tables,
// which would dominate each fuzz execution.
var zw, _ = gzip.NewWriterLevel(nil, gzip.BestSpeed)

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw.Reset(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

// treeSize checks that dir holds only regular files and directories and
// returns the bytes of its files.
func treeSize(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			t.Fatalf("%s is not a regular file", p)
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		total += fi.Size()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// FuzzReadArchive feeds arbitrary tar streams (gzipped by the harness, so
// the fuzzer mutates tar headers rather than breaking gzip) to readArchive,
// the one place challfn decompresses anything (the scenario store): it
// never writes outside its folder, never anything but regular files, never
// more than the cap.
func FuzzReadArchive(f *testing.F) {
	reg := func(name, body string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644}, body: body}
	}
	f.Add(rawTar(f, reg("Pulumi.yaml", "name: x\nruntime: go\n"), reg("main", "bin"), reg("a/b/c.txt", "c")))
	f.Add(rawTar(f, reg("../escape", "x")))
	f.Add(rawTar(f, reg("/tmp/escape", "x")))
	f.Add(rawTar(f, reg("f", "x"), reg("f", "y")))
	f.Add(rawTar(f, reg("d", "x"), reg("d/e", "y")))
	f.Add(rawTar(f, tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "main", Linkname: "/bin/sh"}}))
	f.Add(rawTar(f, tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "l", Linkname: "../x"}}))
	f.Add(rawTar(f, tarEntry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev", Devmajor: 1, Devminor: 3}}))
	f.Add(rawTar(f, tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "pax", Mode: 0o755, PAXRecords: map[string]string{"path": "../pax-escape"}, Format: tar.FormatPAX}, body: "x"}))
	f.Add(rawTar(f, reg(strings.Repeat("a/", 60)+"deep", "x")))
	f.Add([]byte{})
	const max = 4096
	parent := f.TempDir()
	dst := filepath.Join(parent, "dst")
	f.Fuzz(func(t *testing.T, raw []byte) {
		// One folder reused by every input of a worker: cheaper than a
		// TempDir each time, which matters when the fuzzer minimizes.
		if err := os.RemoveAll(dst); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		_ = readArchive(bytes.NewReader(gzipped(raw)), dst, max)
		entries, err := os.ReadDir(parent)
		if err != nil || len(entries) != 1 {
			t.Fatalf("something was written next to the folder: %v", entries)
		}
		if n := treeSize(t, dst); n > max {
			t.Fatalf("%d bytes written, cap %d", n, max)
		}
	})
}

// A decompression bomb in the store is refused by the cap before it is
// expanded: from its declared size, or while streaming many entries.
func TestReadArchiveBomb(t *testing.T) {
	const max = 1 << 20
	big := func(w *tar.Writer) error { // one entry of 64 MiB of zeros
		if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Size: 64 << 20, Mode: 0o644}); err != nil {
			return err
		}
		_, err := io.CopyN(w, zeros{}, 64<<20)
		return err
	}
	many := func(w *tar.Writer) error { // 256 entries of 64 KiB: 16 MiB
		for i := range 256 {
			if err := w.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "f" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)), Size: 64 << 10, Mode: 0o644}); err != nil {
				return err
			}
			if _, err := io.CopyN(w, zeros{}, 64<<10); err != nil {
				return err
			}
		}
		return nil
	}
	for name, fill := range map[string]func(*tar.Writer) error{"one huge entry": big, "many entries": many} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			bw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			tw := tar.NewWriter(bw)
			if err := fill(tw); err != nil {
				t.Fatal(err)
			}
			tw.Close()
			bw.Close()
			if buf.Len() > max {
				t.Fatalf("the bomb is %d bytes compressed", buf.Len())
			}
			dst := t.TempDir()
			err := readArchive(bytes.NewReader(buf.Bytes()), dst, max)
			if err == nil || !strings.Contains(err.Error(), "cap") {
				t.Fatalf("bomb of %d compressed bytes: %v", buf.Len(), err)
			}
			if n := treeSize(t, dst); n > max {
				t.Fatalf("%d bytes written, cap %d", n, max)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
