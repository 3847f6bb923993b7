package telemetry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
)

// TestE2EMonitoringStack starts the real local stack (knative/monitoring/local:
// .bin/jaeger as collector + Jaeger, Debian prometheus) on free loopback
// ports, exports through Setup exactly as a function does (env-configured
// OTLP/HTTP, flush before the response), and reads the result back from
// Jaeger's and Prometheus' HTTP APIs. Guarded by CHALLFN_E2E_MONITORING=1
// until the project's test command installs the stack.
func TestE2EMonitoringStack(t *testing.T) {
	if os.Getenv("CHALLFN_E2E_MONITORING") != "1" {
		t.Skip("set CHALLFN_E2E_MONITORING=1 (needs scripts/install-monitoring.sh)")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	mon := filepath.Join(root, "knative", "monitoring")
	jaegerBin := os.Getenv("CHALLFN_JAEGER")
	if jaegerBin == "" {
		jaegerBin = filepath.Join(root, ".bin", "jaeger")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not installed: %v", err)
	}
	if _, err := os.Stat(jaegerBin); err != nil {
		t.Fatalf("jaeger not built: %v", err)
	}

	tmp := t.TempDir()
	ports := map[string]string{}
	for _, p := range []string{"4317", "4318", "16686", "16685", "8889", "8888", "13133", "9090", "9093"} {
		ports["127.0.0.1:"+p] = "127.0.0.1:" + freePort(t)
	}
	replace := func(src string) string {
		raw, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		s := string(raw)
		for from, to := range ports {
			s = strings.ReplaceAll(s, from, to)
		}
		return strings.ReplaceAll(s, "../alerts.yml", filepath.Join(mon, "alerts.yml"))
	}
	jcfg := filepath.Join(tmp, "jaeger.yaml")
	pcfg := filepath.Join(tmp, "prometheus.yml")
	write(t, jcfg, replace(filepath.Join(mon, "local", "jaeger.yaml")))
	write(t, pcfg, replace(filepath.Join(mon, "local", "prometheus.yml")))
	addr := func(p string) string { return ports["127.0.0.1:"+p] }

	start(t, filepath.Join(tmp, "jaeger.log"), jaegerBin, "--config", jcfg)
	start(t, filepath.Join(tmp, "prom.log"), promBin, "--config.file="+pcfg,
		"--storage.tsdb.path="+filepath.Join(tmp, "prom"), "--web.listen-address="+addr("9090"))
	waitHTTP(t, "http://"+addr("13133")+"/status")
	waitHTTP(t, "http://"+addr("9090")+"/-/ready")

	service := "challfn-e2e-" + uuid.NewString()[:8]
	clearOtelEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+addr("4318"))
	t.Setenv("K_SERVICE", service)
	tel, err := Setup(context.Background(), service, "v9.9.9", WithoutGlobal(), WithLogger(discardLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	if !tel.TracingEnabled() {
		t.Fatal("OTEL_EXPORTER_OTLP_ENDPOINT did not enable export")
	}
	counts := &fakeCounter{counts: Counts{Challenges: 2, PerChallenge: []ChallengeCounts{
		{ChallengeID: "web-1", Claimed: 3, Pooled: 1, PoolMin: 2},
	}}}
	if _, err := tel.Metrics().ObserveCounts(counts, CountsOptions{}); err != nil {
		t.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/instance", func(w http.ResponseWriter, r *http.Request) {
		ctx := WithChallenge(r.Context(), "web-1")
		tel.Metrics().RecordDeploy(ctx, "create", "", 1500*time.Millisecond, nil)
		tel.Metrics().RecordJanitorRun(ctx, JanitorRun{Deleted: 1})
		w.Write([]byte(`{}`))
	})
	srv := httptest.NewServer(tel.Handler("instance", mux))
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/api/v1/instance", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// The response came after the flush: no further flush is done from here on.

	// Jaeger: the server span with its route and attributes.
	jaegerURL := "http://" + addr("16686") + "/api/traces?service=" + service + "&limit=10"
	poll(t, "span in Jaeger", func() error {
		var out struct {
			Data []struct {
				Spans []struct {
					OperationName string `json:"operationName"`
					Tags          []struct {
						Key   string `json:"key"`
						Value any    `json:"value"`
					} `json:"tags"`
				} `json:"spans"`
			} `json:"data"`
		}
		if err := getJSON(jaegerURL, &out); err != nil {
			return err
		}
		for _, tr := range out.Data {
			for _, s := range tr.Spans {
				if s.OperationName != "POST /api/v1/instance" {
					continue
				}
				tags := map[string]string{}
				for _, tg := range s.Tags {
					tags[tg.Key] = fmt.Sprint(tg.Value)
				}
				if tags["http.route"] != "/api/v1/instance" || tags["challenge_id"] != "web-1" || tags["http.response.status_code"] != "200" {
					return fmt.Errorf("span tags %v", tags)
				}
				return nil
			}
		}
		return fmt.Errorf("no span POST /api/v1/instance yet (%d traces)", len(out.Data))
	})

	// Prometheus: the names the alert rules and the dashboard rely on.
	promQ := func(q string) (map[string]float64, error) {
		var out struct {
			Data struct {
				Result []struct {
					Metric map[string]string `json:"metric"`
					Value  [2]any            `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := getJSON("http://"+addr("9090")+"/api/v1/query?query="+url.QueryEscape(q), &out); err != nil {
			return nil, err
		}
		res := map[string]float64{}
		for _, r := range out.Data.Result {
			var v float64
			fmt.Sscan(fmt.Sprint(r.Value[1]), &v)
			res[r.Metric["challenge"]+"/"+r.Metric["pool"]+"/"+r.Metric["op"]] = v
		}
		return res, nil
	}
	job := `{job="` + service + `"}`
	checks := []struct {
		query string
		want  map[string]float64
	}{
		{"challenges" + job, map[string]float64{"//": 2}},
		{"instances" + job, map[string]float64{"web-1/false/": 3, "web-1/true/": 1}},
		{"challfn_pool_min" + job, map[string]float64{"web-1//": 2}},
		{"challfn_store_up" + job, map[string]float64{"//": 1}},
		{"challfn_instance_deploy_duration_seconds_count" + job, map[string]float64{"//create": 1}},
		{"challfn_janitor_deletions_total" + job, map[string]float64{"//": 1}},
		{`count(challfn_janitor_last_success_seconds` + job + `)`, map[string]float64{"//": 1}},
		{`sum(traces_span_metrics_calls_total{service_name="` + service + `",span_kind="SPAN_KIND_SERVER",http_route="/api/v1/instance"})`, map[string]float64{"//": 1}},
		{`count(http_server_request_duration_seconds_bucket{job="` + service + `",http_route="/api/v1/instance"})`, nil},
	}
	for _, c := range checks {
		poll(t, c.query, func() error {
			got, err := promQ(c.query)
			if err != nil {
				return err
			}
			if c.want == nil {
				if len(got) == 0 {
					return fmt.Errorf("no series")
				}
				return nil
			}
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				return fmt.Errorf("got %v, want %v", got, c.want)
			}
			return nil
		})
	}

	// Jaeger SPM reads the spanmetrics back from Prometheus.
	spm := fmt.Sprintf("http://%s/api/metrics/calls?service=%s&endTs=%d&lookback=300000&step=15000&ratePer=60000",
		addr("16686"), service, time.Now().Add(time.Minute).UnixMilli())
	poll(t, "Jaeger SPM calls", func() error {
		var out struct {
			Metrics []any `json:"metrics"`
		}
		if err := getJSON(spm, &out); err != nil {
			return err
		}
		if len(out.Metrics) == 0 {
			return fmt.Errorf("no SPM series")
		}
		return nil
	})
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// start runs a fixture process; it is stopped by PID at cleanup, and its log
// is printed if the test failed.
func start(t *testing.T, logPath, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			raw, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (tail) ---\n%s", filepath.Base(bin), tail(string(raw), 4000))
		}
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func waitHTTP(t *testing.T, u string) {
	t.Helper()
	poll(t, u, func() error {
		resp, err := http.Get(u)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// poll retries f once a second for up to a minute (spanmetrics flush every
// 5 s, Prometheus scrapes every 2 s).
func poll(t *testing.T, what string, f func() error) {
	t.Helper()
	var err error
	for i := 0; i < 60; i++ {
		if err = f(); err == nil {
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: %v", what, err)
}

func getJSON(u string, v any) error {
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d %s", u, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, v)
}
