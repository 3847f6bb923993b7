// Package telemetry sets up OpenTelemetry for one function instance: tracer and
// meter providers exporting over OTLP/HTTP, the resource naming the function,
// W3C propagation (HTTP headers and the CloudEvents tracing extension), the
// flush before every response, the shutdown on SIGTERM, the metric
// instruments, and the JSON slog handler.
//
// Configuration comes from the standard OTEL_* variables. Without an OTLP
// endpoint the providers are no-ops and the middleware only propagates the
// incoming trace context, so telemetry costs nothing measurable.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope of every span and instrument of challfn.
const ScopeName = "github.com/challfn/challfn"

// Environment variables read by this package besides the standard OTEL_* ones.
const (
	// EnvFlushTimeout bounds the flush done before each response (Go duration, default 2s).
	EnvFlushTimeout = "CHALLFN_TELEMETRY_FLUSH_TIMEOUT"
	// EnvGCPDetector enables the GCP resource detector ("true"). Off by default
	// because it probes the metadata server (169.254.169.254) to find out.
	EnvGCPDetector = "CHALLFN_GCP_DETECTOR"
)

// DefaultFlushTimeout bounds Flush when neither an option nor EnvFlushTimeout says otherwise.
const DefaultFlushTimeout = 2 * time.Second

// While degraded (after a failed flush, for degradedPeriod), flushes are
// bounded by degradedFlushTimeout instead of the flush timeout.
const (
	degradedPeriod       = 30 * time.Second
	degradedFlushTimeout = 100 * time.Millisecond
)

// defaultMetricInterval is the PeriodicReader interval when OTEL_METRIC_EXPORT_INTERVAL
// is unset: metrics are pushed by Flush, the timer is only a safety net for
// long-lived instances (Knative without CPU throttling).
const defaultMetricInterval = time.Hour

// Telemetry holds the providers of one function instance. The zero value is
// not usable; use Setup or Disabled.
type Telemetry struct {
	tp           trace.TracerProvider
	mp           metric.MeterProvider
	sdkTP        *sdktrace.TracerProvider // nil when traces are off
	sdkMP        *sdkmetric.MeterProvider // nil when metrics are off
	tracer       trace.Tracer
	metrics      *Instruments
	res          *resource.Resource
	flushTimeout time.Duration
	log          *slog.Logger
	// degradedUntil (Unix ns) is set when a flush fails: until then flushes
	// wait at most degradedFlushTimeout, so a collector outage does not add
	// the full flush timeout to every request.
	degradedUntil atomic.Int64
	shutdownOnce  sync.Once
	shutdownErr   error
}

// Option configures Setup.
type Option func(*options)

type options struct {
	spanExporter sdktrace.SpanExporter
	metricReader sdkmetric.Reader
	flushTimeout time.Duration
	logger       *slog.Logger
	noGlobal     bool
	getenv       func(string) string
}

// WithSpanExporter exports spans to exp (batched) whatever the environment
// says; used by tests (tracetest.InMemoryExporter) and custom setups.
func WithSpanExporter(exp sdktrace.SpanExporter) Option {
	return func(o *options) { o.spanExporter = exp }
}

// WithMetricReader collects metrics with r whatever the environment says; used
// by tests (sdkmetric.NewManualReader) and custom setups.
func WithMetricReader(r sdkmetric.Reader) Option {
	return func(o *options) { o.metricReader = r }
}

// WithFlushTimeout bounds every Flush (overrides EnvFlushTimeout).
func WithFlushTimeout(d time.Duration) Option {
	return func(o *options) { o.flushTimeout = d }
}

// WithLogger is where flush and export errors are reported (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithoutGlobal leaves the otel globals and Default() untouched (tests that
// build several Telemetry values side by side).
func WithoutGlobal() Option {
	return func(o *options) { o.noGlobal = true }
}

// Setup creates the providers once for this function instance (call it in main,
// before serving). serviceName is the default service.name (OTEL_SERVICE_NAME
// wins); version becomes service.version. Traces are exported when
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set,
// metrics when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
// is set; OTEL_SDK_DISABLED=true or OTEL_{TRACES,METRICS}_EXPORTER=none turn
// them off. Unless WithoutGlobal is given, the result becomes Default() and the
// otel global providers and propagator are set.
func Setup(ctx context.Context, serviceName, version string, opts ...Option) (*Telemetry, error) {
	o := options{getenv: os.Getenv}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.Default()
	}
	flushTimeout, err := resolveFlushTimeout(o)
	if err != nil {
		return nil, err
	}

	t := &Telemetry{flushTimeout: flushTimeout, log: o.logger}
	sdkDisabled := strings.EqualFold(strings.TrimSpace(o.getenv("OTEL_SDK_DISABLED")), "true")
	tracesOn := o.spanExporter != nil || (!sdkDisabled && exporterWanted(o.getenv, "TRACES"))
	metricsOn := o.metricReader != nil || (!sdkDisabled && exporterWanted(o.getenv, "METRICS"))

	if tracesOn || metricsOn {
		t.res = buildResource(ctx, serviceName, version, o.getenv, o.logger)
	}

	t.tp = idOnlyTracerProvider()
	if tracesOn {
		exp := o.spanExporter
		if exp == nil {
			// otlptracehttp reads OTEL_EXPORTER_OTLP_{,TRACES_}{ENDPOINT,HEADERS,TIMEOUT,...} itself.
			if exp, err = otlptracehttp.New(ctx); err != nil {
				return nil, fmt.Errorf("telemetry: trace exporter: %w", err)
			}
		}
		t.sdkTP = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(t.res))
		t.tp = t.sdkTP
	}

	t.mp = metricnoop.NewMeterProvider()
	if metricsOn {
		reader := o.metricReader
		if reader == nil {
			exp, err := otlpmetrichttp.New(ctx)
			if err != nil {
				return nil, errors.Join(fmt.Errorf("telemetry: metric exporter: %w", err), t.Shutdown(ctx))
			}
			var ropts []sdkmetric.PeriodicReaderOption
			if o.getenv("OTEL_METRIC_EXPORT_INTERVAL") == "" {
				ropts = append(ropts, sdkmetric.WithInterval(defaultMetricInterval))
			}
			reader = sdkmetric.NewPeriodicReader(exp, ropts...)
		}
		t.sdkMP = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader), sdkmetric.WithResource(t.res))
		t.mp = t.sdkMP
	}

	t.tracer = t.tp.Tracer(ScopeName)
	if t.metrics, err = newInstruments(t.mp.Meter(ScopeName), o.logger); err != nil {
		return nil, errors.Join(err, t.Shutdown(ctx))
	}

	if !o.noGlobal {
		otel.SetTextMapPropagator(Propagator())
		if t.sdkTP != nil {
			otel.SetTracerProvider(t.sdkTP)
		}
		if t.sdkMP != nil {
			otel.SetMeterProvider(t.sdkMP)
		}
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			o.logger.Warn("opentelemetry error", slog.String("error", err.Error()))
		}))
		SetDefault(t)
	}
	return t, nil
}

// idOnlyTracerProvider is the tracer provider when traces are off: spans are neither
// recorded nor exported, but each trace gets its id (the incoming one, or a new one), so
// that log lines and error messages can be correlated whether or not an OTLP endpoint is
// set. A no-op provider would give requests without traceparent no id at all.
func idOnlyTracerProvider() trace.TracerProvider {
	return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
}

// exporterWanted reports whether an OTLP endpoint is configured for signal
// ("TRACES" or "METRICS") and the exporter is not explicitly "none".
func exporterWanted(getenv func(string) string, signal string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_"+signal+"_EXPORTER")), "none") {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != ""
}

func resolveFlushTimeout(o options) (time.Duration, error) {
	if o.flushTimeout > 0 {
		return o.flushTimeout, nil
	}
	if v := o.getenv(EnvFlushTimeout); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("telemetry: %s=%q: want a positive Go duration", EnvFlushTimeout, v)
		}
		return d, nil
	}
	return DefaultFlushTimeout, nil
}

// Disabled returns a Telemetry with no-op providers: spans keep the incoming
// trace context (for logs and outgoing events) but nothing is recorded.
func Disabled() *Telemetry {
	t := &Telemetry{
		tp:           idOnlyTracerProvider(),
		mp:           metricnoop.NewMeterProvider(),
		flushTimeout: DefaultFlushTimeout,
		log:          slog.Default(),
	}
	t.tracer = t.tp.Tracer(ScopeName)
	// Instruments on a no-op meter cannot fail.
	t.metrics, _ = newInstruments(t.mp.Meter(ScopeName), t.log)
	return t
}

var (
	defaultTel      atomic.Pointer[Telemetry]
	disabledTel     *Telemetry
	disabledTelOnce sync.Once
)

// Default returns the Telemetry installed by Setup (or SetDefault), or a
// disabled one. Handlers wrapped by the package-level HTTP and CloudEvent
// resolve it per request, so functions may register in init() before main
// calls Setup.
func Default() *Telemetry {
	if t := defaultTel.Load(); t != nil {
		return t
	}
	disabledTelOnce.Do(func() { disabledTel = Disabled() })
	return disabledTel
}

// SetDefault installs t as Default(); nil restores the disabled one.
func SetDefault(t *Telemetry) { defaultTel.Store(t) }

// Propagator is W3C TraceContext + Baggage, the one used for HTTP headers.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Enabled reports whether spans or metrics are exported at all.
func (t *Telemetry) Enabled() bool { return t.sdkTP != nil || t.sdkMP != nil }

// TracingEnabled reports whether spans are recorded and exported.
func (t *Telemetry) TracingEnabled() bool { return t.sdkTP != nil }

// TracerProvider returns the tracer provider (no-op when tracing is off).
func (t *Telemetry) TracerProvider() trace.TracerProvider { return t.tp }

// MeterProvider returns the meter provider (no-op when metrics are off).
func (t *Telemetry) MeterProvider() metric.MeterProvider { return t.mp }

// Tracer is challfn's tracer (scope ScopeName).
func (t *Telemetry) Tracer() trace.Tracer { return t.tracer }

// Metrics returns challfn's instruments.
func (t *Telemetry) Metrics() *Instruments { return t.metrics }

// Resource is the resource describing this instance (nil when disabled).
func (t *Telemetry) Resource() *resource.Resource { return t.res }

// FlushTimeout is the bound applied by Flush.
func (t *Telemetry) FlushTimeout() time.Duration { return t.flushTimeout }

// Flush exports pending spans and the current metrics, waiting at most the
// flush timeout (less if ctx ends sooner). Errors are logged, never returned:
// a failing collector must not fail a request. After a failure, flushes wait
// at most 100 ms for the next 30 s, so an unreachable collector costs each
// request little; the first success restores the full timeout. Both providers
// flush in parallel; Flush returns only when both are done.
func (t *Telemetry) Flush(ctx context.Context) {
	if t.sdkTP == nil && t.sdkMP == nil {
		return
	}
	timeout := t.flushTimeout
	degraded := time.Now().UnixNano() < t.degradedUntil.Load()
	if degraded && timeout > degradedFlushTimeout {
		timeout = degradedFlushTimeout
	}
	// The request may already be cancelled (client gone): the export must still
	// be attempted, within its own bound.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var wg sync.WaitGroup
	var terr, merr error
	if t.sdkTP != nil {
		wg.Go(func() { terr = t.sdkTP.ForceFlush(ctx) })
	}
	if t.sdkMP != nil {
		wg.Go(func() { merr = t.sdkMP.ForceFlush(ctx) })
	}
	wg.Wait()
	if err := errors.Join(terr, merr); err != nil {
		t.degradedUntil.Store(time.Now().Add(degradedPeriod).UnixNano())
		if !degraded { // once per outage, not once per request
			t.log.WarnContext(ctx, "telemetry flush failed; shortening flush waits for a while", slog.String("error", err.Error()))
		}
		return
	}
	if degraded {
		t.degradedUntil.Store(0)
		t.log.InfoContext(ctx, "telemetry flush recovered")
	}
}

// Degraded reports whether a recent flush failed (flushes are then shortened).
func (t *Telemetry) Degraded() bool { return time.Now().UnixNano() < t.degradedUntil.Load() }

// Shutdown flushes and stops both providers; later calls return the first result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errs []error
		if t.sdkTP != nil {
			if err := t.sdkTP.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("telemetry: tracer provider shutdown: %w", err))
			}
		}
		if t.sdkMP != nil {
			if err := t.sdkMP.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("telemetry: meter provider shutdown: %w", err))
			}
		}
		t.shutdownErr = errors.Join(errs...)
	})
	return t.shutdownErr
}

// Start starts a span with challfn's tracer; a convenience for business code.
// The challenge id and identity recorded in ctx (WithChallenge, WithIdentity)
// become attributes of the span, so every step of a request can be found by
// them, not only the span that was current when they were set.
func Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	ctx, span := Default().tracer.Start(ctx, name, opts...)
	if span.IsRecording() {
		setContextAttrs(ctx, span)
	}
	return ctx, span
}

// setContextAttrs copies the ids of ctx onto span (never the source id: it
// names a player, see EnvLogSourceID).
func setContextAttrs(ctx context.Context, span trace.Span) {
	if v := ChallengeFrom(ctx); v != "" {
		span.SetAttributes(attribute.String(LogChallengeID, v))
	}
	if v := IdentityFrom(ctx); v != "" {
		span.SetAttributes(attribute.String(LogIdentity, v))
	}
}

// Metrics returns Default()'s instruments.
func Metrics() *Instruments { return Default().metrics }

func parseBool(v string) bool {
	b, _ := strconv.ParseBool(strings.TrimSpace(v))
	return b
}
