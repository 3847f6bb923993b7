// Package pubsubtest runs Google's real Pub/Sub emulator (installed with the
// gcloud SDK) on loopback for tests of Cloud Run-style event delivery: publish
// through the REST API, push subscriptions that POST to a local function.
package pubsubtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Emulator is a running Pub/Sub emulator.
type Emulator struct {
	Host    string // host:port, the value of PUBSUB_EMULATOR_HOST
	Project string
}

// Binary finds the emulator launcher of the gcloud SDK.
func Binary() (string, error) {
	candidates := []string{os.Getenv("PUBSUB_EMULATOR_BIN")}
	if gcloud, err := exec.LookPath("gcloud"); err == nil {
		if real, err := filepath.EvalSymlinks(gcloud); err == nil {
			sdk := filepath.Dir(filepath.Dir(real))
			candidates = append(candidates, filepath.Join(sdk, "platform/pubsub-emulator/bin/cloud-pubsub-emulator"))
		}
	}
	candidates = append(candidates,
		"/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator",
		"/usr/share/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("the Pub/Sub emulator is not installed (gcloud component pubsub-emulator)")
}

// Start launches the emulator on a free loopback port; it is stopped when the
// test ends.
func Start(t testing.TB) *Emulator {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	cmd := exec.Command(bin, "--host=127.0.0.1", "--port="+strconv.Itoa(port))
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(cmd.Dir, "emulator.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start pubsub emulator: %v", err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
		logf.Close()
	})
	e := &Emulator{Host: "127.0.0.1:" + strconv.Itoa(port), Project: "challfn-test"}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + e.Host + "/v1/projects/" + e.Project + "/topics")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return e
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("pubsub emulator did not start: %v\n%s", err, log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// CreateTopic creates a topic and returns its full name.
func (e *Emulator) CreateTopic(ctx context.Context, name string) (string, error) {
	full := "projects/" + e.Project + "/topics/" + name
	return full, e.put(ctx, "/v1/"+full, `{}`)
}

// CreatePushSubscription creates a subscription of topic pushing to endpoint.
func (e *Emulator) CreatePushSubscription(ctx context.Context, name, topic, endpoint string) error {
	body := fmt.Sprintf(`{"topic":%q,"pushConfig":{"pushEndpoint":%q},"ackDeadlineSeconds":10}`, topic, endpoint)
	return e.put(ctx, "/v1/projects/"+e.Project+"/subscriptions/"+name, body)
}

func (e *Emulator) put(ctx context.Context, path, body string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+e.Host+path, bytes.NewBufferString(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT %s: %s", path, resp.Status)
	}
	return nil
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
