package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/challfn/challfn/internal/registry"
	"github.com/challfn/challfn/shared/scenario"
)

func TestPush(t *testing.T) {
	reg, err := registry.Start(t.Context(), registry.Options{Username: "u", Password: "p"})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Pulumi.yaml"), []byte("name: x\nruntime: go\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := reg.Host() + "/scn/cli:v1"

	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "no command", args: nil, wantErr: "unknown or missing command"},
		{name: "missing ref", args: []string{"push", dir}, wantErr: "exactly <dir> and <ref>"},
		{name: "no credentials", args: []string{"push", "--insecure", dir, ref}, wantErr: "authentication"},
		{name: "pushed", args: []string{"push", "--insecure", "--username", "u", "--password", "p", dir, ref}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("OCI_USERNAME", "")
			t.Setenv("OCI_PASSWORD", "")
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m, err := scenario.New(t.Context(), scenario.Config{
				StoreURL: "file://" + t.TempDir(),
				CacheDir: t.TempDir(),
				Registry: scenario.RegistryOptions{PlainHTTP: true, Username: "u", Password: "p"},
			})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			dg, err := m.Resolve(t.Context(), ref)
			if err != nil {
				t.Fatal(err)
			}
			want := "Digest: " + dg + "\nReference: " + ref + "@" + dg + "\n"
			if out.String() != want {
				t.Fatalf("output %q, want %q", out.String(), want)
			}
		})
	}
}
