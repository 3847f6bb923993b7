// Package monitoring_test checks the reference monitoring stack's files: they
// parse, they name only metrics challfn emits, and the real tools accept them
// (promtool, amtool, jaeger validate) when those are installed
// (scripts/install-monitoring.sh).
package monitoring_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/challfn/challfn/shared/telemetry"
)

func dir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

func repoRoot(t *testing.T) string { return filepath.Join(dir(t), "..", "..") }

func TestYAMLFilesParse(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(dir(t), "*.y*ml"))
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob(filepath.Join(dir(t), "*", "*.y*ml"))
	files = append(files, more...)
	if len(files) < 10 {
		t.Fatalf("only %d YAML files found: %v", len(files), files)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for n := 0; ; n++ {
			var v any
			err := dec.Decode(&v)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("%s document %d: %v", filepath.Base(f), n, err)
				break
			}
		}
	}
}

// emitted lists the Prometheus names of what challfn and the stack emit, as
// the collector's prometheus exporter names the OTLP instruments.
var emitted = map[string]bool{
	// Store-backed gauges and instruments of shared/telemetry (instruments.go).
	"challenges": true, "instances": true,
	"challfn_pool_size": true, "challfn_pool_min": true, "challfn_pool_max": true, "challfn_store_up": true,
	"challfn_instance_deploy_duration_seconds_bucket":  true,
	"challfn_instance_deploy_duration_seconds_count":   true,
	"challfn_instance_destroy_duration_seconds_bucket": true,
	"challfn_lock_wait_duration_seconds_bucket":        true,
	"challfn_janitor_runs_total":                       true, "challfn_janitor_deletions_total": true,
	"challfn_janitor_failures_total": true, "challfn_janitor_last_success_seconds": true,
	"challfn_events_handled_total": true,
	// spanmetrics connector.
	"traces_span_metrics_calls_total": true, "traces_span_metrics_duration_milliseconds_bucket": true,
	// Prometheus / etcd.
	"up": true, "etcd_server_has_leader": true,
}

// TestMetricNamesMatchInstruments keeps alerts and dashboard in step with the
// instrument names: every challfn_*/traces_* identifier used must be one we
// emit, and each instrument constant must map to a name listed here.
func TestMetricNamesMatchInstruments(t *testing.T) {
	for _, name := range []string{
		telemetry.MetricChallenges, telemetry.MetricInstances, telemetry.MetricPoolSize, telemetry.MetricPoolMin,
		telemetry.MetricPoolMax, telemetry.MetricStoreUp, telemetry.MetricJanitorRuns, telemetry.MetricJanitorDeleted,
		telemetry.MetricJanitorFailures, telemetry.MetricEvents,
	} {
		p := strings.ReplaceAll(name, ".", "_")
		if !emitted[p] && !emitted[p+"_total"] {
			t.Errorf("instrument %s (%s) unknown to the monitoring files' name list", name, p)
		}
	}
	ident := regexp.MustCompile(`\b(challfn_[a-z_]+|traces_span_metrics_[a-z_]+|challenges|instances)\b`)
	for _, f := range []string{"alerts.yml", "grafana/challfn-dashboard.json"} {
		raw, err := os.ReadFile(filepath.Join(dir(t), f))
		if err != nil {
			t.Fatal(err)
		}
		var used []string
		for _, m := range ident.FindAllString(string(raw), -1) {
			if !emitted[m] {
				t.Errorf("%s uses %q, which challfn does not emit", f, m)
			}
			used = append(used, m)
		}
		if len(used) == 0 {
			t.Errorf("%s uses no challfn metric", f)
		}
	}
}

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(dir(t), "grafana", "challfn-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	var all strings.Builder
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			all.WriteString(tg.Expr + "\n")
		}
	}
	// The list: challenges, instances, pool health, deploy latency, error rate, janitor liveness.
	for _, want := range []string{"challenges", "instances", "challfn_pool_min", "challfn_instance_deploy_duration_seconds_bucket", "STATUS_CODE_ERROR", "challfn_janitor_last_success_seconds"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("dashboard has no panel on %s", want)
		}
	}
}

func TestAlertRulesPresent(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(dir(t), "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range doc.Groups {
		for _, r := range g.Rules {
			names = append(names, r.Alert)
		}
	}
	for _, want := range []string{"ChallfnAPIErrorRate", "ChallfnInstanceCreateSlow", "ChallfnJanitorNotRunning", "ChallfnPoolBelowMin", "ChallfnLockWaitHigh", "EtcdDown", "ChallfnStoreUnreachable"} {
		if !slices.Contains(names, want) {
			t.Errorf("alert %s missing (have %v)", want, names)
		}
	}
}

// tool finds an installed binary, or skips: the tools come from
// scripts/install-monitoring.sh, which the project's test command runs first.
func tool(t *testing.T, name string, candidates ...string) string {
	t.Helper()
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CHALLFN_REQUIRE_MONITORING_TOOLS") == "1" {
		t.Fatalf("%s not installed (run scripts/install-monitoring.sh)", name)
	}
	t.Skipf("%s not installed (run scripts/install-monitoring.sh)", name)
	return ""
}

func run(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	t.Logf("%s %s: ok", filepath.Base(bin), strings.Join(args, " "))
}

func TestPromtool(t *testing.T) {
	promtool := tool(t, "promtool", "/usr/bin/promtool")
	d := dir(t)
	run(t, d, promtool, "check", "rules", "alerts.yml")
	run(t, d, promtool, "check", "config", "prometheus.yml")
	run(t, d, promtool, "check", "config", "local/prometheus.yml")
	// Unit tests of the alert expressions on synthetic series.
	run(t, d, promtool, "test", "rules", "alerts_test.yml")
}

func TestAmtool(t *testing.T) {
	amtool := tool(t, "amtool", "/usr/bin/amtool")
	run(t, dir(t), amtool, "check-config", "alertmanager.yml")
}

func TestJaegerValidate(t *testing.T) {
	jaeger := tool(t, "jaeger", os.Getenv("CHALLFN_JAEGER"), filepath.Join(repoRoot(t), ".bin", "jaeger"))
	// Jaeger v2.13.0 embeds the collector v0.140 components the cluster
	// collector image uses, so it validates the collector config as well.
	for _, f := range []string{"jaeger.yaml", "otel-collector.yaml", "local/jaeger.yaml"} {
		run(t, dir(t), jaeger, "validate", "--config", f)
	}
}
