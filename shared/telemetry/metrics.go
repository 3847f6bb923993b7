package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Instrument names, as emitted over OTLP. Through the collector's prometheus
// exporter dots become underscores, unit "s" appends "_seconds", counters
// append "_total"; annotation units like "{instance}" add nothing. The PromQL
// name is given next to each one; knative/monitoring/alerts.yml uses those.
const (
	MetricChallenges      = "challenges"                        // challenges
	MetricInstances       = "instances"                         // instances
	MetricPoolSize        = "challfn.pool.size"                 // challfn_pool_size
	MetricPoolMin         = "challfn.pool.min"                  // challfn_pool_min
	MetricPoolMax         = "challfn.pool.max"                  // challfn_pool_max
	MetricStoreUp         = "challfn.store.up"                  // challfn_store_up
	MetricDeployDuration  = "challfn.instance.deploy.duration"  // challfn_instance_deploy_duration_seconds_{bucket,sum,count}
	MetricDestroyDuration = "challfn.instance.destroy.duration" // challfn_instance_destroy_duration_seconds_{bucket,sum,count}
	MetricLockWait        = "challfn.lock.wait.duration"        // challfn_lock_wait_duration_seconds_{bucket,sum,count}
	MetricJanitorRuns     = "challfn.janitor.runs"              // challfn_janitor_runs_total
	MetricJanitorDeleted  = "challfn.janitor.deletions"         // challfn_janitor_deletions_total
	MetricJanitorFailures = "challfn.janitor.failures"          // challfn_janitor_failures_total
	MetricJanitorLastOK   = "challfn.janitor.last_success"      // challfn_janitor_last_success_seconds
	MetricEvents          = "challfn.events.handled"            // challfn_events_handled_total
	MetricHTTPDuration    = "http.server.request.duration"      // http_server_request_duration_seconds_{bucket,sum,count}
)

// Descriptions of the two seed metrics, exactly as the seed's table.
const (
	DescChallenges = "The number of registered challenges."
	DescInstances  = "The number of registered instances."
)

// Attribute keys of the instruments (and of the spans where they apply).
const (
	AttrChallenge = attribute.Key("challenge")  // challenge id
	AttrPool      = attribute.Key("pool")       // "true": waiting in the pool, "false": claimed by a source
	AttrOp        = attribute.Key("op")         // create | update | pool (deploy); delete | expire | rollback | pool | orphan (destroy)
	AttrStrategy  = attribute.Key("strategy")   // update strategy (update_in_place | blue_green | recreate), "" otherwise
	AttrOutcome   = attribute.Key("outcome")    // ok | error | canceled (| rejected for events)
	AttrLevel     = attribute.Key("level")      // lock level: global | challenge | instance
	AttrMode      = attribute.Key("mode")       // lock mode: read | write
	AttrEventType = attribute.Key("event.type") // CloudEvent type
)

// Outcome values.
const (
	OutcomeOK       = "ok"
	OutcomeError    = "error"
	OutcomeCanceled = "canceled"
	OutcomeRejected = "rejected" // event refused with a 4xx: the platform will not retry it
)

// Histogram buckets in seconds. Deploys are Pulumi runs (a second to minutes,
// bounded by the 600 s request timeout); lock waits are milliseconds normally.
var (
	deployBuckets = []float64{0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600}
	lockBuckets   = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	httpBuckets   = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
)

// Instruments are challfn's metrics. All methods are safe on the instruments of
// a disabled Telemetry (they do nothing).
type Instruments struct {
	meter metric.Meter
	log   *slog.Logger

	challenges metric.Int64ObservableGauge
	instances  metric.Int64ObservableGauge
	poolSize   metric.Int64ObservableGauge
	poolMin    metric.Int64ObservableGauge
	poolMax    metric.Int64ObservableGauge
	storeUp    metric.Int64ObservableGauge

	deploy      metric.Float64Histogram
	destroy     metric.Float64Histogram
	lockWait    metric.Float64Histogram
	httpDur     metric.Float64Histogram
	janitorRuns metric.Int64Counter
	janitorDel  metric.Int64Counter
	janitorFail metric.Int64Counter
	janitorLast metric.Float64Gauge
	events      metric.Int64Counter

	mu  sync.Mutex
	reg *registration // current ObserveCounts callback
}

func newInstruments(m metric.Meter, log *slog.Logger) (*Instruments, error) {
	in := &Instruments{meter: m, log: log}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error

	in.challenges, err = m.Int64ObservableGauge(MetricChallenges, metric.WithDescription(DescChallenges))
	add(err)
	in.instances, err = m.Int64ObservableGauge(MetricInstances, metric.WithDescription(DescInstances))
	add(err)
	in.poolSize, err = m.Int64ObservableGauge(MetricPoolSize, metric.WithUnit("{instance}"),
		metric.WithDescription("Instances waiting in the pool of a challenge, ready to be claimed."))
	add(err)
	in.poolMin, err = m.Int64ObservableGauge(MetricPoolMin, metric.WithUnit("{instance}"),
		metric.WithDescription("Configured minimum pool size of a challenge."))
	add(err)
	in.poolMax, err = m.Int64ObservableGauge(MetricPoolMax, metric.WithUnit("{instance}"),
		metric.WithDescription("Configured maximum number of instances of a challenge (0 = unbounded)."))
	add(err)
	in.storeUp, err = m.Int64ObservableGauge(MetricStoreUp,
		metric.WithDescription("1 if the last read of the counts from the store (etcd) succeeded, else 0."))
	add(err)

	in.deploy, err = m.Float64Histogram(MetricDeployDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of instance deployments (Pulumi up), by op, strategy and outcome."),
		metric.WithExplicitBucketBoundaries(deployBuckets...))
	add(err)
	in.destroy, err = m.Float64Histogram(MetricDestroyDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of instance destructions (Pulumi destroy), by op and outcome."),
		metric.WithExplicitBucketBoundaries(deployBuckets...))
	add(err)
	in.lockWait, err = m.Float64Histogram(MetricLockWait, metric.WithUnit("s"),
		metric.WithDescription("Time spent waiting to acquire a lock, by level and mode."),
		metric.WithExplicitBucketBoundaries(lockBuckets...))
	add(err)
	in.httpDur, err = m.Float64Histogram(MetricHTTPDuration, metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		metric.WithExplicitBucketBoundaries(httpBuckets...))
	add(err)
	in.janitorRuns, err = m.Int64Counter(MetricJanitorRuns, metric.WithUnit("{run}"),
		metric.WithDescription("Janitor runs, by outcome."))
	add(err)
	in.janitorDel, err = m.Int64Counter(MetricJanitorDeleted, metric.WithUnit("{instance}"),
		metric.WithDescription("Instances deleted by the janitor (expired)."))
	add(err)
	in.janitorFail, err = m.Int64Counter(MetricJanitorFailures, metric.WithUnit("{instance}"),
		metric.WithDescription("Janitor deletions or reconciliations that failed."))
	add(err)
	in.janitorLast, err = m.Float64Gauge(MetricJanitorLastOK, metric.WithUnit("s"),
		metric.WithDescription("Unix time of the last successful janitor run."))
	add(err)
	in.events, err = m.Int64Counter(MetricEvents, metric.WithUnit("{event}"),
		metric.WithDescription("CloudEvents handled, by type and outcome."))
	add(err)

	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("telemetry: instruments: %w", err)
	}
	return in, nil
}

// Outcome maps an operation's error to an outcome attribute value.
func Outcome(err error) string {
	switch {
	case err == nil:
		return OutcomeOK
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return OutcomeCanceled
	default:
		return OutcomeError
	}
}

// RecordDeploy records one Pulumi up of an instance. op is create, update or
// pool (pool spin-up); strategy is the update strategy ("" unless op=update).
func (in *Instruments) RecordDeploy(ctx context.Context, op, strategy string, d time.Duration, err error) {
	in.deploy.Record(ctx, d.Seconds(), metric.WithAttributes(
		AttrOp.String(op), AttrStrategy.String(strategy), AttrOutcome.String(Outcome(err))))
}

// RecordDestroy records one Pulumi destroy of an instance. op is delete,
// expire, rollback (failed create), pool (shrink) or orphan (a stack no
// record knows, destroyed by the janitor).
func (in *Instruments) RecordDestroy(ctx context.Context, op string, d time.Duration, err error) {
	in.destroy.Record(ctx, d.Seconds(), metric.WithAttributes(
		AttrOp.String(op), AttrOutcome.String(Outcome(err))))
}

// RecordLockWait records the time spent acquiring one lock (level global,
// challenge or instance; mode read or write), whether or not it was acquired.
func (in *Instruments) RecordLockWait(ctx context.Context, level, mode string, d time.Duration) {
	in.lockWait.Record(ctx, d.Seconds(), metric.WithAttributes(AttrLevel.String(level), AttrMode.String(mode)))
}

// JanitorRun is what one janitor run did.
type JanitorRun struct {
	Deleted  int       // instances deleted because expired
	Failures int       // deletions or reconciliations that failed
	Err      error     // the run as a whole failed (e.g. store unreachable)
	At       time.Time // end of the run; zero means now
}

// RecordJanitorRun records a janitor run. The last-success gauge is set only
// when the run as a whole succeeded (individual failures are counted, but the
// janitor is alive).
func (in *Instruments) RecordJanitorRun(ctx context.Context, r JanitorRun) {
	in.janitorRuns.Add(ctx, 1, metric.WithAttributes(AttrOutcome.String(Outcome(r.Err))))
	if r.Deleted > 0 {
		in.janitorDel.Add(ctx, int64(r.Deleted))
	}
	if r.Failures > 0 {
		in.janitorFail.Add(ctx, int64(r.Failures))
	}
	if r.Err == nil {
		at := r.At
		if at.IsZero() {
			at = time.Now()
		}
		in.janitorLast.Record(ctx, float64(at.UnixNano())/1e9)
	}
}

// RecordEvent counts one handled CloudEvent (outcome ok, error or rejected).
func (in *Instruments) RecordEvent(ctx context.Context, eventType, outcome string) {
	in.events.Add(ctx, 1, metric.WithAttributes(AttrEventType.String(eventType), AttrOutcome.String(outcome)))
}

func (in *Instruments) recordHTTP(ctx context.Context, d time.Duration, attrs metric.MeasurementOption) {
	in.httpDur.Record(ctx, d.Seconds(), attrs)
}
