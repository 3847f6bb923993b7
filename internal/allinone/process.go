package allinone

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/broker"
	"github.com/challfn/challfn/shared/bootstrap"
	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/httpx"
)

// The local topology, built once for every user of it: the local run
// (cmd/challfn-local), the end-to-end tests (internal/testenv) and the
// function processes the fault tests start and kill (internal/testserver).

// SelfBroker, as EVENTS_SINK_URL, is the process's own broker ingress
// (BrokerPath at its own address): events go through a local broker, as on
// Knative, which delivers them to the process's /events.
const SelfBroker = "self"

// Vars is the configuration (docs/ARCHITECTURE.md table) of a local function
// process keeping its state under dir and using etcd at etcdEndpoint: a
// file:// Pulumi backend and scenario store, plain HTTP to registries, events
// through its own broker. Callers add or override what they need.
func Vars(dir, etcdEndpoint string) map[string]string {
	return map[string]string{
		"ETCD_ENDPOINTS":           etcdEndpoint,
		"PULUMI_BACKEND_URL":       "file://" + filepath.Join(dir, "state"),
		"PULUMI_CONFIG_PASSPHRASE": "challfn-local",
		"SCENARIO_STORE_URL":       "file://" + filepath.Join(dir, "scenarios"),
		"CACHE_DIR":                filepath.Join(dir, "cache"),
		"OCI_INSECURE":             "true",
		"EVENTS_SINK_URL":          SelfBroker,
	}
}

// Process is one function process serving the three functions and a broker
// at one address.
type Process struct {
	URL    string
	App    *bootstrap.App
	Broker *broker.Broker
	Server *http.Server
	l      net.Listener
}

// Start builds a Process on l from env (config → bootstrap → broker → mux):
// Serve serves it, Close stops it.
func Start(ctx context.Context, l net.Listener, env config.Getenv, function string, log *slog.Logger) (*Process, error) {
	p := &Process{URL: "http://" + l.Addr().String(), l: l}
	cfg, err := config.Load(func(k string) string {
		v := env(k)
		if k == "EVENTS_SINK_URL" && v == SelfBroker {
			v = p.URL + BrokerPath
		}
		return v
	})
	if err != nil {
		return nil, err
	}
	if p.App, err = bootstrap.New(ctx, cfg, function, log); err != nil {
		return nil, err
	}
	p.Broker = &broker.Broker{Target: p.URL + instance.EventsPath, Log: log, Backoff: 50 * time.Millisecond, Client: Client(p.App)}
	h, err := Mux(ctx, p.App, p.Broker)
	if err != nil {
		p.App.Close()
		return nil, err
	}
	p.Server = httpx.Server(h)
	return p, nil
}

// Serve serves until Close (http.ErrServerClosed then).
func (p *Process) Serve() error { return httpx.Serve(p.Server, p.l) }

// Wait blocks until the asynchronous work sent so far is done: the broker's
// events, or the process's own queue's.
func (p *Process) Wait() {
	p.Broker.Wait()
	if p.App.Queue != nil {
		p.App.Queue.Wait()
	}
}

// Close stops serving, drops the events still queued, and closes the app.
func (p *Process) Close() {
	p.Server.Close()
	p.Broker.Close()
	p.App.Close()
}

// TickJanitor fires the janitor at target like a Knative PingSource (a
// binary-mode CloudEvent POSTed every period) until ctx ends.
func TickJanitor(ctx context.Context, target string, client *http.Client, every time.Duration, log *slog.Logger) {
	sender, err := events.NewSender(target, client)
	if err != nil {
		log.Error("janitor ticker", "error", err)
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			e, err := events.New(ctx, "//challfn/local/ticker", events.TypeJanitorRun, map[string]string{})
			if err == nil {
				err = sender.Send(ctx, e)
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("janitor tick", "error", err)
			}
		}
	}
}
