// Command testserver is one challfn "function process" for the fault tests
// (e2e/faults_test.go): the three functions behind one address exactly as
// internal/allinone serves them, built from the environment (docs/ARCHITECTURE.md
// table) against whatever etcd, Pulumi backend and scenario store the test
// shares between processes, so that a test can kill -9, SIGSTOP and restart
// it like the platform does to a function instance.
//
// Beyond the usual variables:
//
//	TESTSERVER_ADDR    listen address (default 127.0.0.1:0); the URL is printed
//	                   on stdout as "LISTEN http://host:port" once serving
//	TESTSERVER_EVENTS  "broker" (default): events go through an in-process
//	                   broker at /broker that delivers to this process;
//	                   "inline": no event sink, the process's own queue
//	                   (mem://) delivers them
//	TESTSERVER_HOLD    a Go duration: answers to POST/PATCH/DELETE under
//	                   /api/v1/ wait this long after the handler returned and
//	                   before anything is written, so a test can kill the
//	                   process between the etcd write and the response
//
// When the dependencies cannot be built (etcd unreachable at cold start) it
// serves bootstrap.Unready, as the function binaries do.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/challfn/challfn/internal/allinone"
	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/sandbox"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	// As the function binaries do (shared/funcmain).
	_ = sandbox.SetUndumpable()
	addr := os.Getenv("TESTSERVER_ADDR")
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	env := func(k string) string {
		if k == "EVENTS_SINK_URL" && os.Getenv("TESTSERVER_EVENTS") != "inline" {
			return allinone.SelfBroker
		}
		return os.Getenv(k)
	}
	var h http.Handler
	p, err := allinone.Start(ctx, l, env, "testserver", log)
	if err != nil {
		// What a function binary serves when it cannot build its parts (etcd
		// unreachable at cold start).
		log.Error("not ready", "error", err)
		h = bootstrap.Unready("challfn-testserver", err)
	} else {
		h = p.Server.Handler
	}
	if d, err := time.ParseDuration(os.Getenv("TESTSERVER_HOLD")); err == nil && d > 0 {
		h = hold(h, d)
	}
	fmt.Printf("LISTEN http://%s\n", l.Addr())
	return httpx.Serve(httpx.Server(h), l)
}

// hold delays the answers of writes until d after the handler returned.
func hold(next http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || !strings.HasPrefix(r.URL.Path, "/api/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		time.Sleep(d)
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
		_, _ = w.Write(rec.body)
	})
}

type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(s int)           { r.status = s }
func (r *recorder) Write(b []byte) (int, error) { r.body = append(r.body, b...); return len(b), nil }
