package telemetry

import (
	"context"
	"errors"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

type fakeCounter struct {
	calls  atomic.Int64
	counts Counts
	err    error
}

func (f *fakeCounter) Counts(ctx context.Context) (Counts, error) {
	f.calls.Add(1)
	if _, ok := ctx.Deadline(); !ok {
		return Counts{}, errors.New("Counts called without a deadline")
	}
	return f.counts, f.err
}

func gaugePoints(t *testing.T, rm metricdata.ResourceMetrics, name string) map[string]int64 {
	t.Helper()
	g := findMetric(t, rm, name).Data.(metricdata.Gauge[int64])
	out := map[string]int64{}
	for _, dp := range g.DataPoints {
		out[attrKey(dp.Attributes)] = dp.Value
	}
	return out
}

func attrKey(s attribute.Set) string {
	var parts []string
	for _, kv := range s.ToSlice() {
		parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
	}
	sort.Strings(parts)
	out := ""
	for i, p := range parts {
		if i > 0 {
			out += ","
		}
		out += p
	}
	return out
}

func TestObserveCounts(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	fc := &fakeCounter{counts: Counts{
		Challenges: 2,
		PerChallenge: []ChallengeCounts{
			{ChallengeID: "web-1", Claimed: 3, Pooled: 1, PoolMin: 2, PoolMax: 10},
			{ChallengeID: "pwn-2", Claimed: 0, Pooled: 0},
		},
	}}
	unregister, err := tel.Metrics().ObserveCounts(fc, CountsOptions{MinInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rm := collect(t, reader)

	ch := findMetric(t, rm, MetricChallenges)
	if ch.Description != "The number of registered challenges." {
		t.Errorf("challenges description %q", ch.Description)
	}
	if got := gaugePoints(t, rm, MetricChallenges); got[""] != 2 || len(got) != 1 {
		t.Errorf("challenges %v", got)
	}
	in := findMetric(t, rm, MetricInstances)
	if in.Description != "The number of registered instances." {
		t.Errorf("instances description %q", in.Description)
	}
	wantInst := map[string]int64{
		"challenge=web-1,pool=false": 3, "challenge=web-1,pool=true": 1,
		"challenge=pwn-2,pool=false": 0, "challenge=pwn-2,pool=true": 0,
	}
	if got := gaugePoints(t, rm, MetricInstances); !equalMaps(got, wantInst) {
		t.Errorf("instances %v, want %v", got, wantInst)
	}
	for name, want := range map[string]map[string]int64{
		MetricPoolSize: {"challenge=web-1": 1, "challenge=pwn-2": 0},
		MetricPoolMin:  {"challenge=web-1": 2, "challenge=pwn-2": 0},
		MetricPoolMax:  {"challenge=web-1": 10, "challenge=pwn-2": 0},
		MetricStoreUp:  {"": 1},
	} {
		if got := gaugePoints(t, rm, name); !equalMaps(got, want) {
			t.Errorf("%s %v, want %v", name, got, want)
		}
	}

	// Within MinInterval the store is not read again.
	collect(t, reader)
	if n := fc.calls.Load(); n != 1 {
		t.Errorf("store read %d times for 2 collections within MinInterval, want 1", n)
	}

	if err := unregister(); err != nil {
		t.Fatal(err)
	}
	if rm := collect(t, reader); hasMetric(rm, MetricChallenges) {
		t.Error("challenges still observed after unregister")
	}
}

func TestObserveCountsRereadsAfterInterval(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	fc := &fakeCounter{counts: Counts{Challenges: 1}}
	if _, err := tel.Metrics().ObserveCounts(fc, CountsOptions{MinInterval: time.Nanosecond}); err != nil {
		t.Fatal(err)
	}
	collect(t, reader)
	fc.counts.Challenges = 5 // a restart or another instance changed the store
	time.Sleep(time.Millisecond)
	if got := gaugePoints(t, collect(t, reader), MetricChallenges); got[""] != 5 {
		t.Fatalf("challenges %v, want the store's 5", got)
	}
	if fc.calls.Load() != 2 {
		t.Fatalf("store read %d times, want 2", fc.calls.Load())
	}
}

func TestObserveCountsStoreDown(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	fc := &fakeCounter{err: errors.New("etcdserver: request timed out")}
	if _, err := tel.Metrics().ObserveCounts(fc, CountsOptions{}); err != nil {
		t.Fatal(err)
	}
	rm := collect(t, reader)
	if got := gaugePoints(t, rm, MetricStoreUp); got[""] != 0 {
		t.Fatalf("store.up %v, want 0", got)
	}
	if hasMetric(rm, MetricChallenges) || hasMetric(rm, MetricInstances) {
		t.Fatal("challenges reported although the store could not be read")
	}
	if _, err := tel.Metrics().ObserveCounts(nil, CountsOptions{}); err == nil {
		t.Fatal("nil Counter accepted")
	}
}

func TestObserveCountsDisabledNeverReadsStore(t *testing.T) {
	fc := &fakeCounter{}
	if _, err := Disabled().Metrics().ObserveCounts(fc, CountsOptions{}); err != nil {
		t.Fatal(err)
	}
	Disabled().Flush(context.Background())
	if fc.calls.Load() != 0 {
		t.Fatal("disabled telemetry read the store")
	}
}

func TestDurationHistograms(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	ctx := context.Background()
	m := tel.Metrics()
	m.RecordDeploy(ctx, "create", "", 3*time.Second, nil)
	m.RecordDeploy(ctx, "update", "blue_green", 40*time.Second, errors.New("boom"))
	m.RecordDestroy(ctx, "expire", 2*time.Second, context.Canceled)
	m.RecordLockWait(ctx, "challenge", "write", 20*time.Millisecond)

	rm := collect(t, reader)
	tests := []struct {
		metric string
		attrs  string
		sum    float64
		unit   string
	}{
		{MetricDeployDuration, "op=create,outcome=ok,strategy=", 3, "s"},
		{MetricDeployDuration, "op=update,outcome=error,strategy=blue_green", 40, "s"},
		{MetricDestroyDuration, "op=expire,outcome=canceled", 2, "s"},
		{MetricLockWait, "level=challenge,mode=write", 0.02, "s"},
	}
	for _, tt := range tests {
		m := findMetric(t, rm, tt.metric)
		if m.Unit != tt.unit {
			t.Errorf("%s unit %q", tt.metric, m.Unit)
		}
		found := false
		for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
			if attrKey(dp.Attributes) == tt.attrs {
				found = true
				if dp.Count != 1 || dp.Sum != tt.sum {
					t.Errorf("%s{%s}: count %d sum %v", tt.metric, tt.attrs, dp.Count, dp.Sum)
				}
			}
		}
		if !found {
			t.Errorf("%s{%s} not recorded", tt.metric, tt.attrs)
		}
	}
}

func TestRecordJanitorRun(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	ctx := context.Background()
	at := time.Unix(1_700_000_000, 0)
	tel.Metrics().RecordJanitorRun(ctx, JanitorRun{Deleted: 3, Failures: 1, At: at})
	tel.Metrics().RecordJanitorRun(ctx, JanitorRun{Err: errors.New("etcd unreachable"), At: at.Add(time.Hour)})

	rm := collect(t, reader)
	runs := map[string]int64{}
	for _, dp := range findMetric(t, rm, MetricJanitorRuns).Data.(metricdata.Sum[int64]).DataPoints {
		runs[attrKey(dp.Attributes)] = dp.Value
	}
	if !equalMaps(runs, map[string]int64{"outcome=ok": 1, "outcome=error": 1}) {
		t.Errorf("runs %v", runs)
	}
	if dp := findMetric(t, rm, MetricJanitorDeleted).Data.(metricdata.Sum[int64]).DataPoints; dp[0].Value != 3 {
		t.Errorf("deletions %d", dp[0].Value)
	}
	if dp := findMetric(t, rm, MetricJanitorFailures).Data.(metricdata.Sum[int64]).DataPoints; dp[0].Value != 1 {
		t.Errorf("failures %d", dp[0].Value)
	}
	last := findMetric(t, rm, MetricJanitorLastOK).Data.(metricdata.Gauge[float64]).DataPoints
	if len(last) != 1 || last[0].Value != float64(at.Unix()) {
		t.Errorf("last success %v, want %d (the failed run must not move it)", last, at.Unix())
	}
}

func TestOutcome(t *testing.T) {
	for err, want := range map[error]string{
		nil:                      OutcomeOK,
		errors.New("x"):          OutcomeError,
		context.Canceled:         OutcomeCanceled,
		context.DeadlineExceeded: OutcomeCanceled,
		errors.Join(errors.New("a"), context.Canceled): OutcomeCanceled,
	} {
		if got := Outcome(err); got != want {
			t.Errorf("Outcome(%v) = %q, want %q", err, got, want)
		}
	}
}

func equalMaps(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestObserveCountsReplacesPrevious(t *testing.T) {
	tel, _, reader := newTestTelemetry(t)
	first := &fakeCounter{counts: Counts{Challenges: 1}}
	second := &fakeCounter{counts: Counts{Challenges: 7}}
	if _, err := tel.Metrics().ObserveCounts(first, CountsOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tel.Metrics().ObserveCounts(second, CountsOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := gaugePoints(t, collect(t, reader), MetricChallenges); got[""] != 7 || len(got) != 1 {
		t.Fatalf("challenges %v, want only the second observer's 7", got)
	}
	if first.calls.Load() != 0 {
		t.Fatal("replaced observer still read the store")
	}
}
