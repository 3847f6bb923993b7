// Package localstack runs the reference monitoring stack of
// knative/monitoring/local on 127.0.0.1: .bin/jaeger (OTLP receiver,
// spanmetrics, Prometheus exporter, trace store and query API with SPM),
// Debian's prometheus (scraping it, evaluating the alert rules) and
// prometheus-alertmanager. The local run (`challfn-local --monitoring`) and
// the end-to-end tests start it; scripts/install-monitoring.sh installs the
// binaries.
package localstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The loopback addresses written in knative/monitoring/local (and
// alertmanager's flags), by role.
const (
	addrOTLPGRPC  = "127.0.0.1:4317"
	addrOTLPHTTP  = "127.0.0.1:4318"
	addrQuery     = "127.0.0.1:16686"
	addrQueryGRPC = "127.0.0.1:16685"
	addrExporter  = "127.0.0.1:8889"
	addrSelf      = "127.0.0.1:8888"
	addrHealth    = "127.0.0.1:13133"
	addrProm      = "127.0.0.1:9090"
	addrAlerts    = "127.0.0.1:9093"
)

// Options of a stack.
type Options struct {
	// Root is the repository root (knative/monitoring and .bin are under it).
	Root string
	// Dir holds the rendered configurations, the data and the logs.
	Dir string
	// FreePorts picks free loopback ports instead of the configurations'
	// usual ones (tests; several stacks side by side).
	FreePorts bool
	// Rules, when set, replaces knative/monitoring/alerts.yml (a test copy
	// with short durations).
	Rules string
	// Jaeger is the jaeger binary; default Root/.bin/jaeger, then CHALLFN_JAEGER.
	Jaeger string
}

// Stack is a running stack.
type Stack struct {
	// OTLP is the OTLP/HTTP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT).
	OTLP string
	// Jaeger is the base URL of Jaeger's query API (/api/traces, /api/services).
	Jaeger string
	// Prometheus and Alertmanager are their base URLs.
	Prometheus   string
	Alertmanager string
	// Dir is Options.Dir: logs are Dir/<name>.log.
	Dir string

	procs []proc
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Binaries returns the paths of jaeger, prometheus and alertmanager, or an
// error naming what is missing (run scripts/install-monitoring.sh).
func Binaries(o Options) (jaeger, prometheus, alertmanager string, err error) {
	jaeger = o.Jaeger
	if jaeger == "" {
		jaeger = os.Getenv("CHALLFN_JAEGER")
	}
	if jaeger == "" {
		jaeger = filepath.Join(o.Root, ".bin", "jaeger")
	}
	var errs []error
	if _, serr := os.Stat(jaeger); serr != nil {
		errs = append(errs, fmt.Errorf("jaeger: %w", serr))
	}
	prometheus, perr := exec.LookPath("prometheus")
	alertmanager, aerr := exec.LookPath("prometheus-alertmanager")
	if aerr != nil {
		alertmanager, aerr = exec.LookPath("alertmanager")
	}
	errs = append(errs, perr, aerr)
	if err := errors.Join(errs...); err != nil {
		return "", "", "", fmt.Errorf("monitoring stack not installed (scripts/install-monitoring.sh): %w", err)
	}
	return jaeger, prometheus, alertmanager, nil
}

// Start starts the stack and waits until every part answers. On error
// whatever started is stopped.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	jaegerBin, promBin, amBin, err := Binaries(o)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	mon := filepath.Join(o.Root, "knative", "monitoring")
	rules := o.Rules
	if rules == "" {
		rules = filepath.Join(mon, "alerts.yml")
	}
	addrs := map[string]string{}
	for _, a := range []string{addrOTLPGRPC, addrOTLPHTTP, addrQuery, addrQueryGRPC, addrExporter, addrSelf, addrHealth, addrProm, addrAlerts} {
		addrs[a] = a
		if o.FreePorts {
			if addrs[a], err = freeAddr(); err != nil {
				return nil, err
			}
		}
	}
	render := func(src, dst string) error {
		raw, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		s := string(raw)
		for from, to := range addrs {
			s = strings.ReplaceAll(s, from, to)
		}
		s = strings.ReplaceAll(s, "../alerts.yml", rules)
		return os.WriteFile(dst, []byte(s), 0o644)
	}
	jcfg, pcfg := filepath.Join(o.Dir, "jaeger.yaml"), filepath.Join(o.Dir, "prometheus.yml")
	if err := render(filepath.Join(mon, "local", "jaeger.yaml"), jcfg); err != nil {
		return nil, err
	}
	if err := render(filepath.Join(mon, "local", "prometheus.yml"), pcfg); err != nil {
		return nil, err
	}

	s := &Stack{
		OTLP:         "http://" + addrs[addrOTLPHTTP],
		Jaeger:       "http://" + addrs[addrQuery],
		Prometheus:   "http://" + addrs[addrProm],
		Alertmanager: "http://" + addrs[addrAlerts],
		Dir:          o.Dir,
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if err := s.start("jaeger", jaegerBin, "--config", jcfg); err != nil {
		return nil, err
	}
	if err := s.start("alertmanager", amBin, "--config.file="+filepath.Join(mon, "alertmanager.yml"),
		"--storage.path="+filepath.Join(o.Dir, "alertmanager"), "--web.listen-address="+addrs[addrAlerts],
		"--cluster.listen-address="); err != nil {
		return nil, err
	}
	if err := s.start("prometheus", promBin, "--config.file="+pcfg, "--storage.tsdb.path="+filepath.Join(o.Dir, "prometheus"),
		"--web.listen-address="+addrs[addrProm], "--web.enable-lifecycle"); err != nil {
		return nil, err
	}
	for _, u := range []string{"http://" + addrs[addrHealth] + "/status", s.Prometheus + "/-/ready", s.Alertmanager + "/-/ready"} {
		if err := waitReady(ctx, u, 60*time.Second); err != nil {
			return nil, fmt.Errorf("%w (logs in %s)", err, o.Dir)
		}
	}
	return s, nil
}

func (s *Stack) start(name, bin string, args ...string) error {
	logf, err := os.Create(filepath.Join(s.Dir, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	s.procs = append(s.procs, proc{cmd, done})
	return nil
}

// Close stops the processes it started (SIGTERM, then SIGKILL after 10 s).
func (s *Stack) Close() {
	for _, p := range s.procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range s.procs {
		select {
		case <-p.done:
		case <-ctx.Done():
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// Log returns the log of a part ("jaeger", "prometheus", "alertmanager").
func (s *Stack) Log(name string) string {
	raw, _ := os.ReadFile(filepath.Join(s.Dir, name+".log"))
	return string(raw)
}

func waitReady(ctx context.Context, u string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var last error
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w", u, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
