package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/testenv"
)

// BenchmarkInstanceFunctionColdStart: the instance function's binary, as the
// images hold it, from exec to its first answered API request (a query,
// which needs the whole cold start: etcd client, engine, scenario store), the
// binary's size reported with it. Run with -benchtime 5x for the median of 5.
func BenchmarkInstanceFunctionColdStart(b *testing.B) {
	env := testenv.Start(b, testenv.Options{})
	bin := filepath.Join(b.TempDir(), "challfn-instance")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "./cmd/challfn-instance")
	build.Dir = testenv.Root()
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	st, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	var took []time.Duration
	for b.Loop() {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		port := fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
		l.Close()
		cmd := exec.Command(bin)
		cmd.Env = append(functionEnv(env, "CACHE_DIR="+filepath.Join(b.TempDir(), "cache")),
			"PORT="+port, "LOCAL_ONLY=true", "HOME="+os.Getenv("HOME"), "PATH="+os.Getenv("PATH"), "LOG_LEVEL=error")
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		url := "http://127.0.0.1:" + port + "/api/v1/instance?sourceId=cold"
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := http.DefaultClient.Do(req)
			cancel()
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Since(start) > time.Minute {
				b.Fatalf("no answer after a minute: %v", err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		took = append(took, time.Since(start))
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(st.Size())/(1<<20), "binary-MiB")
}
