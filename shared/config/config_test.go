package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) Getenv { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	c, err := Load(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8080" || c.EtcdPrefix != "/challfn" || c.LockTTL != 10*time.Second ||
		c.DeployTimeout != 540*time.Second || c.ScenarioMaxBytes != 256<<20 || c.PulumiBinary != "pulumi" {
		t.Fatalf("unexpected defaults: %+v", c)
	}
	if err := c.Validate(); err == nil {
		t.Fatal("Validate accepted a config without etcd, backend and store")
	}
}

func TestLoadValues(t *testing.T) {
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokens, []byte("a\nb\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(envOf(map[string]string{
		"ETCD_ENDPOINTS":           "http://127.0.0.1:1, http://127.0.0.1:2",
		"PULUMI_BACKEND_URL":       "file:///tmp/x",
		"SCENARIO_STORE_URL":       "file:///tmp/y",
		"PULUMI_CONFIG_PASSPHRASE": "pass",
		"API_TOKENS_FILE":          tokens,
		"LOCK_TTL":                 "3s",
		"OCI_INSECURE":             "true",
		"OCI_ALLOWED_REGISTRIES":   "reg.example:5000",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.EtcdEndpoints) != 2 || c.PulumiPassphrase != "pass" || strings.Join(c.APITokens, ",") != "a,b" ||
		c.LockTTL != 3*time.Second || !c.OCIInsecure || c.OCIAllowed[0] != "reg.example:5000" {
		t.Fatalf("unexpected config: %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"LOCK_TTL", "10"},
		{"LOCK_TTL", "100ms"},
		{"DEPLOY_TIMEOUT", "-1s"},
		{"OCI_INSECURE", "maybe"},
		{"SCENARIO_MAX_BYTES", "1KiB"},
		{"API_TOKENS_FILE", "/nonexistent/tokens"},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			if _, err := Load(envOf(map[string]string{tc.name: tc.value})); err == nil || !strings.Contains(err.Error(), strings.TrimSuffix(tc.name, "_FILE")) {
				t.Fatalf("Load(%s=%q) error = %v, want one naming the variable", tc.name, tc.value, err)
			}
		})
	}
}
