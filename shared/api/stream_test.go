package api

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/challfn/challfn/shared/apierr"
)

const internalLine = `{"error":{"code":13,"message":"An internal error occurred.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"INTERNAL_ERROR","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}}`

func TestStream(t *testing.T) {
	inst := func(src string) *Instance {
		return &Instance{ChallengeID: "1", SourceID: src, Since: t0, LastRenew: t0}
	}
	instJSON := func(src string) string {
		return `{"result":{"challengeId":"1","sourceId":"` + src + `","since":"2025-01-02T03:04:05.120Z","lastRenew":"2025-01-02T03:04:05.120Z","connectionInfo":"","flags":[],"additional":{}}}`
	}
	tests := []struct {
		name        string
		items       []Message
		fail        error
		wantStatus  int
		wantCT      string
		wantLines   []string
		wantChunked bool
	}{
		{"nothing", nil, nil, 200, "", nil, true},
		{"items", []Message{inst("a"), inst("b")}, nil, 200, "application/json", []string{instJSON("a"), instJSON("b")}, true},
		{"error first", nil, errors.New("etcd down"), 500, "application/json", []string{internalLine}, true},
		{"error after items", []Message{inst("a")}, errors.New("etcd down"), 200, "application/json", []string{instJSON("a"), internalLine}, true},
		{"canceled first", nil, context.Canceled, 499, "application/json", []string{`{"error":{"code":1,"message":"","details":[]}}`}, true},
		{"catalogue error first", nil, apierr.Unavailable("etcd is unreachable."), 503, "application/json",
			[]string{`{"error":{"code":14,"message":"etcd is unreachable.","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"UNAVAILABLE","domain":"github.com/ctfer-io/chall-manager","metadata":{}}]}}`}, true},
		{"html in values", []Message{&Challenge{ID: "<&>"}}, nil, 200, "application/json",
			[]string{`{"result":{"id":"<&>","scenario":"","timeout":null,"until":null,"instances":[],"additional":{},"min":"0","max":"0"}}`}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				s := NewStream(w)
				for _, m := range tt.items {
					if err := s.Send(m); err != nil {
						t.Errorf("Send: %v", err)
					}
				}
				if tt.fail != nil {
					s.Fail(tt.fail)
					s.Fail(errors.New("second failure is ignored"))
					if err := s.Send(&Challenge{}); !errors.Is(err, ErrStreamClosed) {
						t.Errorf("Send after Fail: %v", err)
					}
				}
				if got, want := s.Wrote(), len(tt.items) > 0; got != want {
					t.Errorf("Wrote = %v", got)
				}
			}))
			defer srv.Close()
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			if ct := resp.Header.Get("Content-Type"); ct != tt.wantCT {
				t.Fatalf("Content-Type %q, want %q", ct, tt.wantCT)
			}
			if chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"; chunked != tt.wantChunked {
				t.Fatalf("Transfer-Encoding %v", resp.TransferEncoding)
			}
			if len(tt.wantLines) == 0 {
				if len(body) != 0 {
					t.Fatalf("body %q, want empty", body)
				}
				return
			}
			if !strings.HasSuffix(string(body), "\n") {
				t.Fatalf("body does not end with a newline: %q", body)
			}
			lines := strings.Split(strings.TrimSuffix(string(body), "\n"), "\n")
			if len(lines) != len(tt.wantLines) {
				t.Fatalf("%d lines, want %d: %q", len(lines), len(tt.wantLines), body)
			}
			for i := range lines {
				assertJSON(t, []byte(lines[i]), tt.wantLines[i])
			}
		})
	}
}

// Each item reaches the client before the next one is produced (flushed).
func TestStreamFlushesEachItem(t *testing.T) {
	next := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := NewStream(w)
		for _, id := range []string{"a", "b"} {
			if err := s.Send(&Challenge{ID: id}); err != nil {
				t.Error(err)
				return
			}
			select {
			case <-next:
			case <-r.Context().Done():
				return
			}
		}
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, id := range []string{"a", "b"} {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading item %s: %v", id, err)
		}
		var got struct{ Result Challenge }
		if err := jsonUnmarshal([]byte(line), &got); err != nil || got.Result.ID != id {
			t.Fatalf("line %q: %v", line, err)
		}
		next <- struct{}{}
	}
}

// Send is safe from several goroutines (one per challenge, as upstream).
func TestStreamConcurrentSend(t *testing.T) {
	rec := httptest.NewRecorder()
	s := NewStream(rec)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.Send(&Challenge{ID: "x"}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(rec.Body.String(), "\n"), "\n")
	if len(lines) != 50 {
		t.Fatalf("%d lines", len(lines))
	}
	for _, l := range lines {
		assertJSON(t, []byte(l), `{"result":{"id":"x","scenario":"","timeout":null,"until":null,"instances":[],"additional":{},"min":"0","max":"0"}}`)
	}
}
