package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
)

func logLine(t *testing.T, o LogOptions, ctx context.Context, msg string, args ...any) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	slog.New(NewLogHandler(&buf, o)).InfoContext(ctx, msg, args...)
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not one JSON object: %q: %v", buf.String(), err)
	}
	return m
}

func TestLogContextFields(t *testing.T) {
	tel, _, _ := newTestTelemetry(t)
	ctx, span := tel.Tracer().Start(context.Background(), "req")
	defer span.End()
	ctx = WithChallenge(ctx, "web-1")
	ctx = WithIdentity(ctx, "a1b2c3")
	ctx = WithSource(ctx, "team-42")

	tests := []struct {
		name     string
		ctx      context.Context
		opts     LogOptions
		want     map[string]string
		wantGone []string
	}{
		{"all fields, source hidden by default", ctx, LogOptions{},
			map[string]string{"trace_id": span.SpanContext().TraceID().String(), "span_id": span.SpanContext().SpanID().String(), "challenge_id": "web-1", "identity": "a1b2c3", "msg": "creating instance"},
			[]string{"source_id"}},
		{"source allowed", ctx, LogOptions{LogSourceID: true},
			map[string]string{"source_id": "team-42", "challenge_id": "web-1"}, nil},
		{"bare context", context.Background(), LogOptions{},
			map[string]string{"msg": "creating instance", "level": "INFO"},
			[]string{"trace_id", "span_id", "challenge_id", "identity", "source_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := logLine(t, tt.opts, tt.ctx, "creating instance")
			for k, v := range tt.want {
				if m[k] != v {
					t.Errorf("%s = %v, want %q", k, m[k], v)
				}
			}
			for _, k := range tt.wantGone {
				if _, ok := m[k]; ok {
					t.Errorf("%s present: %v", k, m[k])
				}
			}
		})
	}
}

func TestLogContextSetsSpanAttributes(t *testing.T) {
	tel, spans, _ := newTestTelemetry(t)
	ctx, span := tel.Tracer().Start(context.Background(), "req")
	ctx = WithChallenge(ctx, "web-1")
	WithIdentity(WithSource(ctx, "team-42"), "a1b2c3")
	span.End()
	tel.Flush(context.Background())
	attrs := attrMap(spans.GetSpans()[0].Attributes)
	if attrs["challenge_id"] != "web-1" || attrs["identity"] != "a1b2c3" {
		t.Errorf("span attributes %v", attrs)
	}
	for k, v := range attrs {
		if strings.Contains(v, "team-42") {
			t.Errorf("source id leaked into span attribute %s", k)
		}
	}
}

func TestLogRedaction(t *testing.T) {
	const secret = "s3cr3t-value"
	hdr := http.Header{"Authorization": {"Bearer " + secret}, "Accept": {"application/json"}}
	tests := []struct {
		name string
		args []any
		keep map[string]any // fields that must survive unchanged
	}{
		{"password", []any{"password", secret}, nil},
		{"passphrase env-like key", []any{"PULUMI_CONFIG_PASSPHRASE", secret}, nil},
		{"token", []any{"apiToken", secret}, nil},
		{"authorization", []any{"Authorization", secret}, nil},
		{"etcd password in a group", []any{slog.Group("etcd", slog.String("password", secret), slog.String("endpoint", "127.0.0.1:2379"))}, nil},
		{"header map", []any{"headers", hdr}, nil},
		{"string map", []any{"env", map[string]string{"OCI_PASSWORD": secret, "OCI_USERNAME": "bob"}}, nil},
		{"source id key when not allowed", []any{"sourceId", secret}, nil},
		{"ordinary fields untouched", []any{"identity_hint", "abc", "count", 3}, map[string]any{"identity_hint": "abc", "count": float64(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			slog.New(NewLogHandler(&buf, LogOptions{})).Info("msg", tt.args...)
			if strings.Contains(buf.String(), secret) {
				t.Fatalf("secret printed: %s", buf.String())
			}
			var m map[string]any
			if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
				t.Fatal(err)
			}
			for k, v := range tt.keep {
				if m[k] != v {
					t.Errorf("%s = %v, want %v", k, m[k], v)
				}
			}
			if tt.keep == nil && !strings.Contains(buf.String(), Redacted) {
				t.Errorf("no redaction marker in %s", buf.String())
			}
		})
	}
	// The caller's header map is not modified by the redaction.
	if hdr.Get("Authorization") != "Bearer "+secret {
		t.Fatal("redaction mutated the logged value")
	}
}

// The level of LogOptions filters records (config.Process parses LOG_LEVEL).
func TestLogLevelFilters(t *testing.T) {
	var buf bytes.Buffer
	l := NewLogger(&buf, LogOptions{Level: slog.LevelWarn})
	l.Info("hidden")
	l.Warn("shown")
	if strings.Contains(buf.String(), "hidden") || !strings.Contains(buf.String(), "shown") {
		t.Fatalf("output %q", buf.String())
	}
}
