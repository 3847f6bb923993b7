package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Log field names added from the context.
const (
	LogTraceID     = "trace_id"
	LogSpanID      = "span_id"
	LogChallengeID = "challenge_id"
	LogIdentity    = "identity"
	LogSourceID    = "source_id"
)

// Environment variables of the logger.
const (
	EnvLogLevel = "LOG_LEVEL" // debug | info | warn | error (slog level syntax, e.g. "info+2"); default info
	// EnvLogSourceID ("true") lets source_id appear in logs. Off by default:
	// the source id names a player or team and the identity already correlates
	// a request with its instance (docs/design.md, decision 10: the scenario sees an
	// identity, never the source id).
	EnvLogSourceID = "LOG_SOURCE_ID"
)

// Redacted replaces the value of a sensitive field.
const Redacted = "[REDACTED]"

type ctxKey int

const (
	challengeKey ctxKey = iota
	identityKey
	sourceKey
)

// WithChallenge records the challenge id in ctx for logs, and as attribute
// challenge_id on the span in ctx.
func WithChallenge(ctx context.Context, id string) context.Context {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String(LogChallengeID, id))
	return context.WithValue(ctx, challengeKey, id)
}

// WithIdentity records the instance identity in ctx for logs, and as
// attribute identity on the span in ctx.
func WithIdentity(ctx context.Context, identity string) context.Context {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String(LogIdentity, identity))
	return context.WithValue(ctx, identityKey, identity)
}

// WithSource records the source id in ctx. It reaches logs only when
// LOG_SOURCE_ID=true, and never spans.
func WithSource(ctx context.Context, sourceID string) context.Context {
	return context.WithValue(ctx, sourceKey, sourceID)
}

// ChallengeFrom returns the challenge id set by WithChallenge, or "".
func ChallengeFrom(ctx context.Context) string { s, _ := ctx.Value(challengeKey).(string); return s }

// IdentityFrom returns the identity set by WithIdentity, or "".
func IdentityFrom(ctx context.Context) string { s, _ := ctx.Value(identityKey).(string); return s }

// SourceFrom returns the source id set by WithSource, or "".
func SourceFrom(ctx context.Context) string { s, _ := ctx.Value(sourceKey).(string); return s }

// LogOptions configure NewLogHandler.
type LogOptions struct {
	Level       slog.Leveler // default info
	LogSourceID bool         // print source_id (see EnvLogSourceID)
}

// LogOptionsFromEnv reads LOG_LEVEL and LOG_SOURCE_ID. On a bad LOG_LEVEL it
// returns info and an error saying so.
func LogOptionsFromEnv() (LogOptions, error) {
	o := LogOptions{Level: slog.LevelInfo, LogSourceID: parseBool(os.Getenv(EnvLogSourceID))}
	if v := strings.TrimSpace(os.Getenv(EnvLogLevel)); v != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(v)); err != nil {
			return o, fmt.Errorf("telemetry: %s=%q: %w", EnvLogLevel, v, err)
		}
		o.Level = l
	}
	return o, nil
}

// NewLogger is a JSON logger on w configured from the environment; a bad
// LOG_LEVEL is reported on the logger itself and info is used.
func NewLogger(w io.Writer) *slog.Logger {
	o, err := LogOptionsFromEnv()
	l := slog.New(NewLogHandler(w, o))
	if err != nil {
		l.Warn("invalid log level, using info", slog.String("error", err.Error()))
	}
	return l
}

// NewLogHandler returns a JSON handler that adds trace_id/span_id of the span
// in the context, challenge_id and identity (and source_id if allowed) set by
// WithChallenge/WithIdentity/WithSource, and redacts sensitive fields: any key
// containing password, passphrase, secret, token, authorization, cookie,
// credential or api_key (case- and separator-insensitive), and the matching
// entries of an http.Header or map[string]string value.
//
// Context fields go under the groups opened with WithGroup, like any record
// attribute: keep loggers ungrouped where correlation matters.
func NewLogHandler(w io.Writer, o LogOptions) slog.Handler {
	if o.Level == nil {
		o.Level = slog.LevelInfo
	}
	r := redactor{sourceID: o.LogSourceID}
	return &logHandler{
		inner:    slog.NewJSONHandler(w, &slog.HandlerOptions{Level: o.Level, ReplaceAttr: r.replace}),
		sourceID: o.LogSourceID,
	}
}

type logHandler struct {
	inner    slog.Handler
	sourceID bool
}

func (h *logHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	noteLogged(ctx, r.Level)
	var extra [5]slog.Attr
	n := 0
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		extra[n] = slog.String(LogTraceID, sc.TraceID().String())
		extra[n+1] = slog.String(LogSpanID, sc.SpanID().String())
		n += 2
	}
	if v := ChallengeFrom(ctx); v != "" {
		extra[n] = slog.String(LogChallengeID, v)
		n++
	}
	if v := IdentityFrom(ctx); v != "" {
		extra[n] = slog.String(LogIdentity, v)
		n++
	}
	if h.sourceID {
		if v := SourceFrom(ctx); v != "" {
			extra[n] = slog.String(LogSourceID, v)
			n++
		}
	}
	if n > 0 {
		// Clone: the caller's record may share its attribute storage.
		r = r.Clone()
		r.AddAttrs(extra[:n]...)
	}
	return h.inner.Handle(ctx, r)
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &logHandler{inner: h.inner.WithAttrs(as), sourceID: h.sourceID}
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{inner: h.inner.WithGroup(name), sourceID: h.sourceID}
}

type redactor struct{ sourceID bool }

var sensitiveWords = []string{"password", "passphrase", "passwd", "secret", "token", "authorization", "cookie", "credential", "apikey", "privatekey"}

// sensitive reports whether a field or header name may carry a secret.
func (rd redactor) sensitive(key string) bool {
	k := strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', '.', ' ':
			return -1
		}
		return r
	}, strings.ToLower(key))
	for _, w := range sensitiveWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return !rd.sourceID && k == "sourceid"
}

func (rd redactor) replace(_ []string, a slog.Attr) slog.Attr {
	if rd.sensitive(a.Key) {
		return slog.String(a.Key, Redacted)
	}
	if a.Value.Kind() != slog.KindAny {
		return a
	}
	switch v := a.Value.Any().(type) {
	case http.Header:
		out := make(http.Header, len(v))
		for k, vs := range v {
			if rd.sensitive(k) {
				vs = []string{Redacted}
			}
			out[k] = vs
		}
		return slog.Any(a.Key, out)
	case map[string]string:
		out := make(map[string]string, len(v))
		for k, s := range v {
			if rd.sensitive(k) {
				s = Redacted
			}
			out[k] = s
		}
		return slog.Any(a.Key, out)
	}
	return a
}
