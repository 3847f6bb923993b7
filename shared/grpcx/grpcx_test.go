package grpcx_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/challfn/challfn/functions/challenge"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/grpcx"
	"github.com/challfn/challfn/shared/httpx"
)

func TestIsGRPC(t *testing.T) {
	for _, c := range []struct {
		name  string
		major int
		ct    string
		want  bool
	}{
		{"gRPC", 2, "application/grpc", true},
		{"explicit proto subtype", 2, "application/grpc+proto", true},
		{"other codec", 2, "application/grpc+json", false},
		{"gRPC-Web", 2, "application/grpc-web+proto", false},
		{"REST over HTTP/2", 2, "application/json", false},
		{"gRPC content type over HTTP/1.1", 1, "application/grpc", false},
		{"no content type", 2, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/api.v1.challenge.ChallengeStore/RetrieveChallenge", nil)
			r.ProtoMajor = c.major
			if c.ct != "" {
				r.Header.Set("Content-Type", c.ct)
			}
			if got := grpcx.IsGRPC(r); got != c.want {
				t.Fatalf("IsGRPC = %v, want %v", got, c.want)
			}
		})
	}
}

// fakeChallenges is a challenge.Service whose answers depend on the id.
type fakeChallenges struct{ items int }

func (fakeChallenges) CreateChallenge(context.Context, *api.CreateChallengeRequest) (*api.Challenge, error) {
	return nil, errors.New("not used")
}

func (fakeChallenges) RetrieveChallenge(_ context.Context, id string) (*api.Challenge, error) {
	switch id {
	case "missing":
		return nil, apierr.ChallengeNotFound(id)
	case "raw":
		return nil, errors.New("etcd: raw cause with internals")
	case "panic":
		panic("handler bug")
	}
	return &api.Challenge{ID: id, Scenario: "reg/scn:v1"}, nil
}

// QueryChallenges sends from several goroutines at once, as a manager may.
func (f fakeChallenges) QueryChallenges(_ context.Context, send func(*api.Challenge) error) error {
	var wg sync.WaitGroup
	errs := make(chan error, f.items)
	for i := range f.items {
		wg.Go(func() { errs <- send(&api.Challenge{ID: fmt.Sprint(i)}) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return apierr.ChallengeNotFound("after-items")
}

func (fakeChallenges) UpdateChallenge(context.Context, *api.UpdateChallengeRequest) (*api.Challenge, error) {
	return nil, errors.New("not used")
}

func (fakeChallenges) DeleteChallenge(context.Context, string) error { return nil }

// serve serves h with httpx.Server on loopback and returns a gRPC client of it.
func serve(t *testing.T, h http.Handler) (*grpc.ClientConn, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpx.Server(h)
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	conn, err := grpc.NewClient(l.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(api.Codec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, l.Addr().String()
}

func call(conn *grpc.ClientConn, method string, req any) (*api.Challenge, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := new(api.Challenge)
	return out, conn.Invoke(ctx, "/api.v1.challenge.ChallengeStore/"+method, req, out)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServer(t *testing.T) {
	logs := &syncBuffer{}
	s := grpcx.NewServer(grpcx.Options{Log: slog.New(slog.NewTextHandler(logs, nil))})
	challenge.RegisterGRPC(s, fakeChallenges{items: 40})
	rest := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	conn, addr := serve(t, grpcx.Split(s.Handler(), rest))

	tests := []struct {
		id      string
		code    codes.Code
		message string
		reason  string
		log     string // in the failure's log line
	}{
		{"ok", codes.OK, "", "", ""},
		// A refusal is an answer: no log line.
		{"missing", codes.NotFound, "Challenge not found.", "CHALLENGE_NOT_FOUND", ""},
		// A server-side failure: one ERROR line with the cause.
		{"raw", codes.Internal, "An internal error occurred.", "INTERNAL_ERROR", "raw cause with internals"},
		{"panic", codes.Internal, "An internal error occurred.", "INTERNAL_ERROR", "handler bug"},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			c, err := call(conn, "RetrieveChallenge", &api.RetrieveChallengeRequest{ID: tt.id})
			st := status.Convert(err)
			if st.Code() != tt.code || st.Message() != tt.message {
				t.Fatalf("status %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.message)
			}
			if tt.code == codes.OK {
				if c.ID != "ok" || c.Scenario != "reg/scn:v1" {
					t.Fatalf("answer %+v", c)
				}
				return
			}
			if strings.Contains(st.Message(), "internals") {
				t.Fatalf("the cause reached the client: %q", st.Message())
			}
			if info, ok := st.Details()[0].(*errdetails.ErrorInfo); !ok || info.Reason != tt.reason {
				t.Fatalf("details %v, want ErrorInfo %s first", st.Details(), tt.reason)
			}
			if tt.log == "" {
				if strings.Contains(logs.String(), "id="+tt.id) || strings.Contains(logs.String(), tt.reason) {
					t.Fatalf("a refusal was logged:\n%s", logs)
				}
				return
			}
			if !strings.Contains(logs.String(), tt.log) || !strings.Contains(logs.String(), "level=ERROR") {
				t.Fatalf("no ERROR line with %q:\n%s", tt.log, logs)
			}
		})
	}

	t.Run("server stream with concurrent sends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ss, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/api.v1.challenge.ChallengeStore/QueryChallenge")
		if err != nil {
			t.Fatal(err)
		}
		if err := ss.SendMsg(&api.Empty{}); err != nil {
			t.Fatal(err)
		}
		_ = ss.CloseSend()
		seen := map[string]bool{}
		for {
			c := new(api.Challenge)
			if err = ss.RecvMsg(c); err != nil {
				break
			}
			seen[c.ID] = true
		}
		// The items, then the error status after them.
		if len(seen) != 40 || status.Code(err) != codes.NotFound {
			t.Fatalf("%d distinct items, end %v", len(seen), err)
		}
	})

	t.Run("HTTP/1.1 with the gRPC content type is REST", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api.v1.challenge.ChallengeStore/RetrieveChallenge", strings.NewReader(""))
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 1 || resp.StatusCode != http.StatusTeapot {
			t.Fatalf("HTTP/%d %d, want the REST handler over HTTP/1.1", resp.ProtoMajor, resp.StatusCode)
		}
	})
}

// A gRPC call that no server can take yet (the function's dependencies are
// not built) gets the same 503 as REST, as a status a gRPC client decodes.
func TestWriteStatus(t *testing.T) {
	unready := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		grpcx.WriteStatus(w, apierr.Unavailable("challfn is not ready: etcd: context deadline exceeded, 100% down"))
	})
	conn, _ := serve(t, grpcx.Split(unready, http.NotFoundHandler()))
	_, err := call(conn, "RetrieveChallenge", &api.RetrieveChallengeRequest{ID: "x"})
	st := status.Convert(err)
	if st.Code() != codes.Unavailable || st.Message() != "challfn is not ready: etcd: context deadline exceeded, 100% down" {
		t.Fatalf("status %v %q", st.Code(), st.Message())
	}
	if d := st.Details(); len(d) != 1 || d[0].(*errdetails.ErrorInfo).GetReason() != apierr.ReasonUnavailable {
		t.Fatalf("details %v", d)
	}
}

// The request size cap of REST applies to gRPC messages.
func TestServerMaxRecv(t *testing.T) {
	s := grpcx.NewServer(grpcx.Options{MaxRecvBytes: 1024, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	challenge.RegisterGRPC(s, fakeChallenges{})
	conn, _ := serve(t, s.Handler())
	_, err := call(conn, "RetrieveChallenge", &api.RetrieveChallengeRequest{ID: strings.Repeat("x", 2048)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("oversized request: %v", err)
	}
	if _, err := call(conn, "RetrieveChallenge", &api.RetrieveChallengeRequest{ID: "ok"}); err != nil {
		t.Fatalf("small request: %v", err)
	}
}
