package bucketurl

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob"
)

func TestNormalize(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"file:///var/lib/state", "file:///var/lib/state?metadata=skip&no_tmp_dir=true"},
		{"file:///s?no_tmp_dir=false&metadata=", "file:///s?metadata=skip&no_tmp_dir=false"},
		{"gs://bucket/prefix", "gs://bucket/prefix"},
		{"s3://b?region=x", "s3://b?region=x"},
	} {
		got, err := Normalize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestNoSidecars: a write through a normalized file:// URL leaves only the blob
// itself, nothing a killed writer could leave half-written for readers.
func TestNoSidecars(t *testing.T) {
	dir := t.TempDir()
	u, err := Normalize("file://" + dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	b, err := blob.OpenBucket(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WriteAll(ctx, "stacks/p/x.json", []byte(`{}`), &blob.WriterOptions{Metadata: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "stacks", "p"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "x.json" {
		t.Fatalf("files written: %v", entries)
	}
}
