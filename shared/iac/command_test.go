package iac

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestCapBuffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		want   string
	}{
		{"under the head", []string{"ab", "cd"}, "abcd"},
		{"head then tail", []string{"abcdef"}, "abcdef"},
		{"tail wraps", []string{"abcd", "efghij"}, "abcd\n[challfn: 2 bytes of output dropped]\nghij"},
		{"one big write", []string{"0123456789xyz"}, "0123\n[challfn: 5 bytes of output dropped]\n9xyz"},
		{"many small writes", strings.Split("0123456789xyz", ""), "0123\n[challfn: 5 bytes of output dropped]\n9xyz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newCapBuffer(4, 4)
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Fatalf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestEngineEnviron(t *testing.T) {
	env := engineEnviron([]string{
		"PATH=/usr/bin", "API_TOKENS=t", "api_tokens_file=/t", "OCI_PASSWORD=o", "ETCD_USERNAME=u",
		"ETCD_PASSWORD_FILE=/e", "PULUMI_CONFIG_PASSPHRASE=p", "KUBECONFIG=/k", "GOOGLE_APPLICATION_CREDENTIALS=/g",
	}, []string{"PULUMI_BACKEND_URL=file:///s"}, "/opt/bin")
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if engineOnlyHidden[strings.ToUpper(k)] {
			t.Errorf("the engine gets %s", kv)
		}
	}
	// The engine keeps what it needs: the passphrase, the backend's credentials.
	for _, want := range []string{"PULUMI_CONFIG_PASSPHRASE=p", "KUBECONFIG=/k", "GOOGLE_APPLICATION_CREDENTIALS=/g",
		"PULUMI_BACKEND_URL=file:///s", "PULUMI_AUTOMATION_API=true", "PATH=/opt/bin:/usr/bin"} {
		if !slices.Contains(env, want) {
			t.Errorf("missing %s in %q", want, env)
		}
	}
}

// TestReadEventsSkipsFloods: an event log grown by a chatty scenario (huge diagnostic
// lines) is read without holding them, and the events challfn needs are still found.
func TestReadEventsSkipsFloods(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	huge := `{"sequence":1,"diagnosticEvent":{"message":"` + strings.Repeat("x", maxEventLine+10) + `","severity":"info"}}`
	outs := `{"sequence":3,"resOutputsEvent":{"metadata":{"op":"create","urn":"u","type":"pulumi:pulumi:Stack","new":{"type":"pulumi:pulumi:Stack","urn":"u","outputs":{"connection_info":"nc x 1"}}}}}`
	diag := `{"sequence":2,"diagnosticEvent":{"message":"boom","severity":"error"}}`
	if err := os.WriteFile(path, []byte(huge+"\n"+diag+"\n"+outs+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, found, err := stackOutputs(path)
	if err != nil || !found || got["connection_info"] != "nc x 1" {
		t.Fatalf("stackOutputs = %v, %v, %v", got, found, err)
	}
	msgs, err := errorDiagnostics(path)
	if err != nil || !slices.Equal(msgs, []string{"boom"}) {
		t.Fatalf("errorDiagnostics = %q, %v", msgs, err)
	}
}
