package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/challfn/challfn/shared/apierr"
)

const contentTypeJSON = "application/json"

// Write answers 200 with m as JSON. A message that cannot be encoded (a time
// outside years 1..9999) becomes the generic 500.
func Write(w http.ResponseWriter, m Message) {
	b, err := Encode(m)
	if err != nil {
		apierr.Write(w, apierr.Internal().WithCause(fmt.Errorf("encoding response: %w", err)))
		return
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// WriteEmpty answers 200 with `{}` (google.protobuf.Empty): the DELETE routes.
func WriteEmpty(w http.ResponseWriter) {
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("{}"))
}

// Stream writes a server stream as grpc-gateway's ForwardResponseStream does
// (docs/contract.md §1.4): chunked, one `{"result":<message>}` line per item,
// flushed; Content-Type set with the first item; nothing written means a 200
// with an empty body; a failure is one `{"error":<Status>}` line, with the
// mapped HTTP status only if nothing was written before. Safe for concurrent use.
type Stream struct {
	mu     sync.Mutex
	w      http.ResponseWriter
	rc     *http.ResponseController
	wrote  bool
	failed bool
}

// NewStream starts a stream on w.
func NewStream(w http.ResponseWriter) *Stream {
	w.Header().Set("Transfer-Encoding", "chunked")
	return &Stream{w: w, rc: http.NewResponseController(w)}
}

// ErrStreamClosed is returned by Send after Fail.
var ErrStreamClosed = errors.New("api: stream already failed")

// Send writes one item. An error means the client cannot be written to any
// more (or the message cannot be encoded): the caller should stop.
func (s *Stream) Send(m Message) error {
	b, err := Encode(m)
	if err != nil {
		return fmt.Errorf("encoding stream item: %w", err)
	}
	// The gateway marshals the chunk as a Go map through encoding/json.
	line, err := json.Marshal(map[string]json.RawMessage{"result": b})
	if err != nil {
		return fmt.Errorf("encoding stream item: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return ErrStreamClosed
	}
	if !s.wrote {
		s.w.Header().Set("Content-Type", contentTypeJSON)
	}
	if _, err := s.w.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("writing stream item: %w", err)
	}
	s.wrote = true
	if err := s.rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("flushing stream item: %w", err)
	}
	return nil
}

// Fail ends the stream with err's error line (mapped with apierr.From).
// Later calls do nothing.
func (s *Stream) Fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return
	}
	s.failed = true
	e := apierr.From(err)
	if !s.wrote {
		s.w.Header().Set("Content-Type", contentTypeJSON)
		s.w.WriteHeader(e.HTTPStatus())
	}
	_, _ = s.w.Write(append(apierr.StreamLine(e), '\n'))
	_ = s.rc.Flush()
}

// Wrote reports whether at least one item was written.
func (s *Stream) Wrote() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.wrote
}

// bracketKey is the gateway's `key[sub]=v` form (runtime/query.go).
var bracketKey = regexp.MustCompile(`^(.*)\[(.*)\]$`)

// ParseQueryInstance reads the query of GET /api/v1/instance as the gateway's
// PopulateQueryParameters does for QueryInstanceRequest: `source_id` and
// `sourceId` both set the source, unknown keys are ignored, a missing source
// is "" (not an error), and these are 400s with the gateway's text: a query
// that does not parse, a repeated value (`too many values for field
// "source_id": a, b`), a sub-path (`invalid path: "sourceId" is not a message`).
func ParseQueryInstance(rawQuery string) (sourceID string, err error) {
	values, err := url.ParseQuery(rawQuery)
	if err != nil {
		return "", apierr.BadRequest(err.Error())
	}
	// Sorted so that `source_id=a&sourceId=b` resolves the same way every time
	// (the gateway's map order is random there).
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fields := mdQueryInstanceRequest.Fields()
	for _, key := range keys {
		vals := values[key]
		if m := bracketKey.FindStringSubmatch(key); len(m) == 3 {
			key = m[1]
			vals = append([]string{m[2]}, vals...)
		}
		path := strings.Split(key, ".")
		f := fields.ByTextName(path[0])
		if f == nil {
			f = fields.ByJSONName(path[0])
		}
		if f == nil {
			continue
		}
		if len(path) > 1 {
			return "", apierr.BadRequest(fmt.Sprintf("invalid path: %q is not a message", path[0]))
		}
		if len(vals) > 1 {
			return "", apierr.BadRequest(fmt.Sprintf("too many values for field %q: %s", f.Name(), strings.Join(vals, ", ")))
		}
		sourceID = vals[0]
	}
	return sourceID, nil
}

// DefaultMaxBodyBytes is the default request body cap.
const DefaultMaxBodyBytes int64 = 1 << 20

// LimitBody caps r.Body at max bytes (DefaultMaxBodyBytes when max <= 0).
// A Content-Length above the cap is refused at once with the BodyTooLarge
// error; a longer body found while reading makes the Decode* functions return
// that same error.
func LimitBody(w http.ResponseWriter, r *http.Request, max int64) error {
	if max <= 0 {
		max = DefaultMaxBodyBytes
	}
	if r.ContentLength > max {
		return apierr.BodyTooLarge(max)
	}
	if r.Body != nil {
		r.Body = http.MaxBytesReader(w, r.Body, max)
	}
	return nil
}

// MaxIDBytes is the longest accepted challenge or source ID.
const MaxIDBytes = 256

// ValidateID checks a challenge or source ID (etcd key segment): non-empty,
// at most MaxIDBytes bytes, valid UTF-8, no control character, no '/', not
// "." or "..". field names the field in the InvalidArgument error
// (e.g. "id", "challenge_id", "source_id").
func ValidateID(field, id string) error {
	invalid := func(reason, desc string) error {
		return apierr.InvalidArgument(field, reason, desc)
	}
	switch {
	case id == "":
		return invalid("EMPTY", "The identifier must not be empty.")
	case len(id) > MaxIDBytes:
		return invalid("TOO_LONG", fmt.Sprintf("The identifier must be at most %d bytes long.", MaxIDBytes))
	case !utf8.ValidString(id):
		return invalid("INVALID_UTF8", "The identifier must be valid UTF-8.")
	case strings.ContainsFunc(id, unicode.IsControl):
		return invalid("CONTROL_CHARACTER", "The identifier must not contain control characters.")
	case strings.Contains(id, "/"):
		return invalid("SLASH", "The identifier must not contain '/'.")
	case id == "." || id == "..":
		return invalid("DOT_SEGMENT", "The identifier must not be \".\" or \"..\".")
	}
	return nil
}

// DecodeBody caps r's body at max bytes (see LimitBody) and decodes it with
// decode: the first step of every route that takes a body.
//
// The body must arrive within BodyTimeout: a client that sends it slowly (or
// never) gets a 400 instead of holding a connection and a request slot for as
// long as it likes. The deadline is the connection's read deadline
// (http.ResponseController), lifted once the body is read.
func DecodeBody[T any](w http.ResponseWriter, r *http.Request, max int64, decode func(io.Reader) (*T, error)) (*T, error) {
	if err := LimitBody(w, r, max); err != nil {
		return nil, err
	}
	rc := http.NewResponseController(w)
	deadline := rc.SetReadDeadline(time.Now().Add(BodyTimeout)) == nil
	body := &deadlineBody{r: r.Body}
	t, err := decode(body)
	if err != nil && body.timedOut {
		// The rest of the body will never come: close the connection (the
		// server would otherwise wait to discard it, with no deadline left).
		w.Header().Set("Connection", "close")
		return nil, apierr.BodyTooSlow(BodyTimeout)
	}
	if deadline {
		_ = rc.SetReadDeadline(time.Time{})
	}
	return t, err
}

// BodyTimeout bounds the reading of a request body (bodies are ≤ 1 MiB).
const BodyTimeout = 20 * time.Second

// deadlineBody remembers whether a read hit the connection's deadline.
type deadlineBody struct {
	r        io.Reader
	timedOut bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	if b.r == nil {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		b.timedOut = true
	}
	return n, err
}

// Respond answers a unary call: err in the contract's shape, else m.
func Respond[M Message](w http.ResponseWriter, m M, err error) {
	if err != nil {
		apierr.Write(w, err)
		return
	}
	Write(w, m)
}
