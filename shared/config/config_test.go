package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/sandbox"
)

func envOf(m map[string]string) Getenv { return func(k string) string { return m[k] } }

func TestLoadDefaults(t *testing.T) {
	c, err := Load(envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if c.EtcdPrefix != "/challfn" || c.LockTTL != 10*time.Second ||
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

func TestLoadProcess(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Process
		wantErr string
	}{
		{name: "defaults", want: Process{Port: "8080", LogLevel: slog.LevelInfo}},
		{name: "values", env: map[string]string{
			"PORT": "9000", "LOCAL_ONLY": "true", "FUNCTION_TARGET": "instance-events",
			"CLOUD_RUN_TIMEOUT_SECONDS": "300", "LOG_LEVEL": "WARN", "LOG_SOURCE_ID": "true",
			"CHALLFN_TELEMETRY_FLUSH_TIMEOUT": "750ms", "CHALLFN_GCP_DETECTOR": "1",
		}, want: Process{
			Port: "9000", LocalOnly: true, Target: "instance-events", RequestTimeout: 300 * time.Second,
			LogLevel: slog.LevelWarn, LogSourceID: true, FlushTimeout: 750 * time.Millisecond, GCPDetector: true,
		}},
		{name: "bad level keeps info", env: map[string]string{"LOG_LEVEL": "loud"},
			want: Process{Port: "8080", LogLevel: slog.LevelInfo}, wantErr: "LOG_LEVEL"},
		{name: "bad timeout ignored", env: map[string]string{"CLOUD_RUN_TIMEOUT_SECONDS": "soon"},
			want: Process{Port: "8080"}, wantErr: "CLOUD_RUN_TIMEOUT_SECONDS"},
		{name: "bad flush timeout", env: map[string]string{"CHALLFN_TELEMETRY_FLUSH_TIMEOUT": "-1s"},
			want: Process{Port: "8080"}, wantErr: "CHALLFN_TELEMETRY_FLUSH_TIMEOUT"},
		{name: "bad bool", env: map[string]string{"LOCAL_ONLY": "yes please"},
			want: Process{Port: "8080"}, wantErr: "LOCAL_ONLY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadProcess(envOf(tt.env))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestLoadLanghost(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    Langhost
		wantErr string
	}{
		{name: "defaults", want: Langhost{CacheDir: defaultLanghostCache(), Sandbox: sandbox.Auto}},
		{name: "values", env: map[string]string{
			"CHALLFN_LANGHOST_CACHE": "/c", sandbox.EnvMode: "require", sandbox.EnvBin: "/b/challfn-sandbox",
			sandbox.EnvHide: sandbox.HideList("/state", "", "/cache"),
		}, want: Langhost{CacheDir: "/c", Sandbox: sandbox.Require, SandboxBin: "/b/challfn-sandbox", Hide: []string{"/state", "/cache"}}},
		{name: "bad mode", env: map[string]string{sandbox.EnvMode: "maybe"}, wantErr: sandbox.EnvMode},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := LoadLanghost(envOf(tt.env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one naming %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, %v\nwant %+v", got, err, tt.want)
			}
		})
	}
}
