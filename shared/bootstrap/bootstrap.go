// Package bootstrap builds a function's dependencies from its configuration:
// the etcd client, records, locks, the scenario manager, the Pulumi engine, the
// event sender and the business layer. Each function instance does this once,
// at its first request (cold start), and keeps the result.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/grpcx"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/iac"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/sandbox"
	"github.com/challfn/challfn/shared/scenario"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/telemetry"
	"github.com/challfn/challfn/shared/version"
)

// App is everything a function needs to serve.
type App struct {
	Config    config.Config
	Etcd      *clientv3.Client
	Store     *store.Store
	Locks     *lock.Locker
	Scenarios *scenario.Manager
	Engine    *iac.Engine
	Manager   *manager.Manager
	Log       *slog.Logger
	// Queue carries the asynchronous work when no events sink is configured
	// (mem://): Wait lets a test wait for it.
	Queue *events.InProcess
}

// New connects to etcd and builds the rest. source names the function in the
// events it sends (`//challfn/<function>`).
func New(ctx context.Context, cfg config.Config, function string, log *slog.Logger) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	cli, err := etcd.Connect(ctx, etcd.Config{
		Endpoints: cfg.EtcdEndpoints, Username: cfg.EtcdUsername, Password: cfg.EtcdPassword,
		DialOptions: []grpc.DialOption{telemetry.GRPCDialOption("etcd")},
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	a := &App{Config: cfg, Etcd: cli, Log: log}
	a.Store = store.New(cli, cfg.EtcdPrefix)
	// The registered counts are read from etcd at collection time by every
	// function instance (correct after any restart); replaces the previous
	// registration when an App is built again.
	if _, err := telemetry.Metrics().ObserveCounts(StoreCounter(a.Store), telemetry.CountsOptions{}); err != nil {
		log.WarnContext(ctx, "registering the counts gauges", "error", err)
	}
	a.Locks = lock.New(cli, lock.Options{Prefix: cfg.EtcdPrefix, TTL: cfg.LockTTL, Hook: lockHook})
	a.Engine, err = iac.New(iac.Config{
		PulumiBin:  cfg.PulumiBinary,
		BackendURL: cfg.PulumiBackendURL,
		Passphrase: cfg.PulumiPassphrase,
		OpTimeout:  cfg.DeployTimeout,
		// Deployments queue here, not in front of the function: reads
		// keep flowing when every engine slot is busy.
		MaxProcesses: int(cfg.EngineConcurrency),
		// The manager runs the engine on a stack only with the right to it
		// (the instance's writer lock, a fresh identity, the janitor's
		// orphan grace): a stack lock it meets is a dead engine's.
		ExclusiveStacks: true,
		Sandbox:         cfg.ScenarioSandbox,
		SandboxBin:      cfg.SandboxBin,
		// Scenario programs see their own folder, never the others' nor the cache.
		Hide: []string{cfg.CacheDir},
	})
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("pulumi engine: %w", err)
	}
	logSandbox(ctx, log, a.Engine)
	a.Scenarios, err = scenario.New(ctx, scenario.Config{
		StoreURL: cfg.ScenarioStoreURL,
		CacheDir: cfg.CacheDir,
		Registry: scenario.RegistryOptions{
			PlainHTTP:         cfg.OCIInsecure,
			Username:          cfg.OCIUsername,
			Password:          cfg.OCIPassword,
			AllowedRegistries: cfg.OCIAllowed,
		},
		MaxBytes:  cfg.ScenarioMaxBytes,
		Previewer: a.Engine,
	})
	if err != nil {
		cli.Close()
		return nil, fmt.Errorf("scenarios: %w", err)
	}
	// Without a sink, the process's own queue carries the work (mem://): a
	// single-process setup such as the local run. Functions on a serverless
	// platform set EVENTS_SINK_URL to their broker.
	sinkURL := cfg.EventsSinkURL
	if sinkURL == "" {
		sinkURL = "mem://"
	}
	var sender manager.Sender
	{
		client := &http.Client{Transport: otelhttp.NewTransport(http.DefaultTransport)}
		if len(cfg.APITokens) > 0 && loopback(sinkURL) {
			// A loopback sink is challfn's own all-in-one broker (local run,
			// tests), which the API tokens protect like any other route. A
			// remote broker never receives an API token.
			client.Transport = httpx.BearerTransport(cfg.APITokens[0], client.Transport)
		}
		s, err := events.NewSender(sinkURL, client, events.WithPubSubEmulator(cfg.PubSubEmulator))
		if err != nil {
			a.Close()
			return nil, err
		}
		sender = s
	}
	records, locks := manager.OnEtcd(a.Store, a.Locks)
	a.Manager = manager.New(manager.Options{
		Records:   records,
		Locks:     locks,
		Scenarios: a.Scenarios,
		Engine:    a.Engine,
		Events:    sender,
		Source:    "//challfn/" + function,
		Debug:     cfg.Debug,
		// A PATCH or DELETE waits for its instance work as long as one
		// engine operation may take, within the request timeout.
		UpdateWait: cfg.DeployTimeout,
		Log:        log,
		Limits: api.Limits{PoolMin: cfg.PoolMinLimit, PoolMax: cfg.PoolMaxLimit,
			AdditionalBytes: int(cfg.AdditionalMaxBytes)},
	})
	if q, ok := sender.(*events.InProcess); ok {
		q.Log = log
		q.Bind(telemetry.CloudEvent(a.Manager.HandleEvent))
		a.Queue = q
	}
	return a, nil
}

// loopback reports whether rawURL's host is a loopback address or localhost.
func loopback(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	if h := u.Hostname(); h == "localhost" {
		return true
	} else if ip := net.ParseIP(h); ip != nil {
		return ip.IsLoopback()
	}
	return false
}

// Close releases the connections.
func (a *App) Close() error {
	var errs []error
	if a.Queue != nil {
		a.Queue.Close()
	}
	if a.Scenarios != nil {
		errs = append(errs, a.Scenarios.Close())
	}
	if a.Etcd != nil {
		errs = append(errs, a.Etcd.Close())
	}
	return errors.Join(errs...)
}

// Health is the health endpoint: 503 while etcd does not answer.
func (a *App) Health(component string) http.Handler {
	return httpx.Health(component, version.Version, httpx.Check{
		Name: "etcd",
		Probe: func(ctx context.Context) error {
			_, err := a.Etcd.Get(ctx, "health", clientv3.WithLimit(1), clientv3.WithCountOnly())
			return err
		},
	})
}

// Lazy builds a function's App and handler on first use (a cold start) and
// keeps them; a failed build is retried at the next call (etcd may come up
// after the function). Until it succeeds, requests get Unready's answers.
type Lazy struct {
	// New builds the App.
	New func(ctx context.Context) (*App, error)
	// Handler builds the function's HTTP handler from the App (optional).
	Handler func(ctx context.Context, a *App) (http.Handler, error)
	// GRPC builds the handler of the function's gRPC calls (optional; see
	// ServeGRPC).
	GRPC func(ctx context.Context, a *App) (http.Handler, error)
	// Component names the function in health answers.
	Component string

	mu      sync.Mutex
	app     *App
	handler http.Handler
	grpc    http.Handler
}

// Get returns the App, building it if needed.
func (l *Lazy) Get(ctx context.Context) (*App, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.get(ctx)
}

func (l *Lazy) get(ctx context.Context) (*App, error) {
	if l.app != nil {
		return l.app, nil
	}
	app, err := l.New(ctx)
	if err != nil {
		return nil, err
	}
	l.app = app
	return app, nil
}

// ServeHTTP serves with the handler built by Handler.
func (l *Lazy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, err := l.getHandler(r.Context())
	if err != nil {
		Unready(l.Component, err).ServeHTTP(w, r)
		return
	}
	h.ServeHTTP(w, r)
}

// ServeGRPC serves a gRPC call with the handler built by GRPC; until the App
// can be built, the call gets the same 503 (Unavailable) as REST, as a gRPC
// status.
func (l *Lazy) ServeGRPC(w http.ResponseWriter, r *http.Request) {
	h, err := l.getGRPC(r.Context())
	if err != nil {
		// Through the telemetry wrapper, as the REST Unready answer is: the
		// failure gets its log line and the call its flush.
		telemetry.Default().GRPCHandler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			grpcx.WriteStatus(w, unavailable(err))
		})).ServeHTTP(w, r)
		return
	}
	h.ServeHTTP(w, r)
}

func (l *Lazy) getGRPC(ctx context.Context) (http.Handler, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.grpc != nil {
		return l.grpc, nil
	}
	a, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	h, err := l.GRPC(context.WithoutCancel(ctx), a)
	if err != nil {
		return nil, err
	}
	l.grpc = h
	return h, nil
}

// GRPCOptions configure the function's gRPC server as its REST routes are:
// the same API tokens, request size cap and logger.
func (a *App) GRPCOptions() grpcx.Options {
	return grpcx.Options{Tokens: a.Config.APITokens, MaxRecvBytes: a.Config.MaxRequestBytes, Log: a.Log}
}

func (l *Lazy) getHandler(ctx context.Context) (http.Handler, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handler != nil {
		return l.handler, nil
	}
	a, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	// The handler lives as long as the process: not tied to this request.
	h, err := l.Handler(context.WithoutCancel(ctx), a)
	if err != nil {
		return nil, err
	}
	l.handler = h
	return h, nil
}

// FromEnv is the usual Lazy.New: configuration from the environment, and
// the process's default logger (shared/funcmain sets it up before serving).
func FromEnv(function string) func(ctx context.Context) (*App, error) {
	return func(ctx context.Context) (*App, error) {
		cfg, err := config.FromEnv()
		if err != nil {
			return nil, err
		}
		return New(ctx, cfg, function, slog.Default())
	}
}

// lockHook makes a span of every lock acquisition and wait, and records the
// waits in the lock-wait histogram (names "lock.wait.<level>.<mode>").
func lockHook(ctx context.Context, name string) (context.Context, func()) {
	ctx, span := telemetry.Start(ctx, name)
	start := time.Now()
	return ctx, func() {
		span.End()
		if rest, ok := strings.CutPrefix(name, "lock.wait."); ok {
			level, mode, _ := strings.Cut(rest, ".")
			telemetry.Metrics().RecordLockWait(ctx, level, mode, time.Since(start))
		}
	}
}

// Unready answers while the dependencies cannot be built (etcd unreachable
// at cold start, bad configuration): the health endpoint says why in its
// usual shape (503), everything else is a 503 in the contract's shape.
func Unready(component string, err error) http.Handler {
	health := httpx.Health(component, version.Version, httpx.Check{
		Name:  "startup",
		Probe: func(context.Context) error { return err },
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == httpx.HealthPath {
			health.ServeHTTP(w, r)
			return
		}
		apierr.Write(w, unavailable(err))
	})
}

func unavailable(err error) *apierr.Error {
	return apierr.Unavailable("challfn is not ready: " + err.Error())
}

// StoreCounter reads the counts of the challenges and instances gauges from
// st: one transaction (AllChallenges) gives every challenge with its claimed
// and pooled instances at one revision. It runs outside any request's trace:
// a read at metric collection time is not part of the request being flushed.
func StoreCounter(st *store.Store) telemetry.Counter {
	return telemetry.CounterFunc(func(ctx context.Context) (telemetry.Counts, error) {
		ctx = trace.ContextWithSpan(ctx, trace.SpanFromContext(context.Background()))
		snaps, err := st.AllChallenges(ctx)
		if err != nil {
			return telemetry.Counts{}, err
		}
		c := telemetry.Counts{Challenges: int64(len(snaps)), PerChallenge: make([]telemetry.ChallengeCounts, 0, len(snaps))}
		for _, s := range snaps {
			c.PerChallenge = append(c.PerChallenge, telemetry.ChallengeCounts{
				ChallengeID: s.Challenge.ID,
				Claimed:     int64(len(s.Claimed)),
				Pooled:      int64(len(s.Pooled)),
				PoolMin:     s.Challenge.Min,
				PoolMax:     s.Challenge.Max,
			})
		}
		return c, nil
	})
}

// logSandbox says which containment scenario programs get here (docs/threat-model.md):
// a warning when it is less than a jail with namespaces.
func logSandbox(ctx context.Context, log *slog.Logger, e *iac.Engine) {
	flavor, degraded := e.Sandbox()
	if flavor == sandbox.FlavorNone {
		log.WarnContext(ctx, "scenario programs run without a jail: they can read what this function's user can read and reach its network; only the end of their processes is guaranteed (set SCENARIO_SANDBOX=require to refuse this)",
			"sandbox.flavor", flavor, "sandbox.refused", degraded)
		return
	}
	log.InfoContext(ctx, "scenario programs run in a jail", "sandbox.flavor", flavor, "sandbox.refused", degraded)
}
