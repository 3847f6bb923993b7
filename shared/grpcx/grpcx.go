// Package grpcx is the gRPC plumbing every challfn function shares: the
// server that serves upstream's ChallengeStore and InstanceManager services
// (docs/contract.md §0, §1.7) next to REST on one port, its interceptors (panic
// recovery, bearer tokens, failure logs), the typed method adapters the
// function packages describe their services with, and the dispatch of a
// request to gRPC or REST. The services themselves (which manager method each
// RPC calls) live in the function packages, as the REST routes do.
package grpcx

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/apierr"
	"github.com/challfn/challfn/shared/httpx"
	"github.com/challfn/challfn/shared/telemetry"
)

// IsGRPC reports whether r is a gRPC call: HTTP/2 with content-type
// application/grpc (or its explicit +proto form), the test upstream's cmux
// applies. Everything else, HTTP/1.1 requests included, is REST.
func IsGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || ct == "application/grpc+proto"
}

// Split sends gRPC calls to grpcH and every other request to rest.
func Split(grpcH, rest http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if IsGRPC(r) {
			grpcH.ServeHTTP(w, r)
			return
		}
		rest.ServeHTTP(w, r)
	})
}

// Options configure a server.
type Options struct {
	// Tokens, when not empty, must be presented as `authorization: Bearer
	// <token>` metadata on every call (API_TOKENS, as for REST).
	Tokens []string
	// MaxRecvBytes caps a request message (MAX_REQUEST_BYTES; 0 = the REST
	// default cap), as REST caps bodies.
	MaxRecvBytes int64
	// Telemetry gives the server spans and metrics (nil = Default()).
	Telemetry *telemetry.Telemetry
	// Log receives the line of each server-side failure nobody explained,
	// with its cause (nil = slog.Default()).
	Log *slog.Logger
}

// Server is a gRPC server served through net/http.
type Server struct {
	*grpc.Server
	tel *telemetry.Telemetry
}

// NewServer returns a server for challfn's services: the wire codec of
// shared/api, otelgrpc spans and metrics, and the interceptors (outermost
// first) recovery → tokens → failure log. Register services on it, then
// serve it with Handler.
func NewServer(o Options) *Server {
	tel := o.Telemetry
	if tel == nil {
		tel = telemetry.Default()
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	maxRecv := o.MaxRecvBytes
	if maxRecv <= 0 {
		maxRecv = api.DefaultMaxBodyBytes
	}
	tokens := httpx.NewTokens(o.Tokens)
	srv := grpc.NewServer(
		// The messages are the Go structs of shared/api, encoded through
		// upstream's descriptors (api.Codec), for every content subtype the
		// dispatch lets through (proto only).
		grpc.ForceServerCodec(api.Codec{}),
		grpc.StatsHandler(tel.GRPCServerHandler()),
		grpc.MaxRecvMsgSize(int(maxRecv)),
		grpc.ChainUnaryInterceptor(recoverUnary(log), authUnary(tokens), logUnary(log)),
		grpc.ChainStreamInterceptor(recoverStream(log), authStream(tokens), logStream(log)),
	)
	return &Server{Server: srv, tel: tel}
}

// Handler serves the server's calls over net/http (HTTP/2: see
// httpx.Server) and flushes telemetry before each call's end reaches the
// client.
func (s *Server) Handler() http.Handler {
	return s.tel.GRPCHandler(http.HandlerFunc(s.Server.ServeHTTP))
}

// Unary describes one unary method: the request is decoded into a new Req
// (a request type of shared/api), call's error is mapped to the contract's
// status with apierr (the one mapping REST uses too).
func Unary[Req, Resp any](method string, call func(ctx context.Context, req *Req) (Resp, error)) grpc.MethodDesc {
	return grpc.MethodDesc{
		MethodName: method,
		Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
			req := new(Req)
			if err := dec(req); err != nil {
				// grpc-go's own status (Internal, "error unmarshalling
				// request"), as any gRPC server answers.
				return nil, err
			}
			handler := func(ctx context.Context, in any) (any, error) {
				resp, err := call(ctx, in.(*Req))
				if err != nil {
					return nil, apierr.GRPC(err)
				}
				return resp, nil
			}
			if icpt == nil {
				return handler(ctx, req)
			}
			return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod(ctx, method)}, handler)
		},
	}
}

// ServerStream describes one server-streaming method: call sends the items
// through send (safe for concurrent use: the manager may send from several
// goroutines); its error ends the stream with the mapped status, after the
// items already sent, as the REST stream's error line does.
func ServerStream[Req, Item any](method string, call func(ctx context.Context, req *Req, send func(Item) error) error) grpc.StreamDesc {
	return grpc.StreamDesc{
		StreamName:    method,
		ServerStreams: true,
		Handler: func(_ any, ss grpc.ServerStream) error {
			req := new(Req)
			if err := ss.RecvMsg(req); err != nil {
				return err
			}
			var mu sync.Mutex
			err := call(ss.Context(), req, func(it Item) error {
				mu.Lock()
				defer mu.Unlock()
				return ss.SendMsg(it)
			})
			if err != nil && ss.Context().Err() != nil {
				// The client went away (a failed send says so less clearly).
				err = ss.Context().Err()
			}
			return apierr.GRPC(err)
		},
	}
}

// fullMethod is "/package.Service/Method" of the call in ctx.
func fullMethod(ctx context.Context, method string) string {
	if m, ok := grpc.Method(ctx); ok {
		return m
	}
	return method
}

// WriteStatus answers a gRPC call with err's status (mapped with apierr)
// without a server: a trailers-only response, for calls that cannot reach a
// server yet (the function's dependencies are not built).
func WriteStatus(w http.ResponseWriter, err error) {
	st := apierr.From(err).GRPCStatus()
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(int(st.Code())))
	if m := st.Message(); m != "" {
		h.Set("Grpc-Message", encodeMessage(m))
	}
	if p := st.Proto(); len(p.GetDetails()) > 0 {
		if b, err := proto.Marshal(p); err == nil {
			h.Set("Grpc-Status-Details-Bin", encodeBin(b))
		}
	}
	w.WriteHeader(http.StatusOK)
}

// --- interceptors ---

func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicked(ctx, log, info.FullMethod, r)
			}
		}()
		return handler(ctx, req)
	}
}

func recoverStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = panicked(ss.Context(), log, info.FullMethod, r)
			}
		}()
		return handler(srv, ss)
	}
}

// panicked turns a handler's panic into the generic internal error (upstream
// answers Unknown with the panic text and stack: challfn keeps them in the
// logs). Without recovery a panic in a gRPC handler kills the process.
func panicked(ctx context.Context, log *slog.Logger, method string, r any) error {
	cause := fmt.Errorf("panic: %v", r)
	log.ErrorContext(ctx, "gRPC handler panicked", "method", method, "error", cause, "stack", string(debug.Stack()))
	return apierr.Internal().WithCause(cause)
}

func authorized(ctx context.Context, tokens *httpx.Tokens) error {
	if tokens == nil {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if tokens.Valid(v) {
			return nil
		}
	}
	return apierr.Unauthenticated()
}

func authUnary(tokens *httpx.Tokens) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := authorized(ctx, tokens); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

func authStream(tokens *httpx.Tokens) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := authorized(ss.Context(), tokens); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		logFailure(ctx, log, info.FullMethod, err)
		return resp, err
	}
}

func logStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		logFailure(ss.Context(), log, info.FullMethod, err)
		return err
	}
}

// logFailure writes the log line of a call that failed on the server's side
// (a 5xx over REST), with its code, reason and cause (the wire carries only
// the catalogue's text), unless an ERROR line already explained it (the
// manager logs the failures it knows the cause of). Refusals the client must
// fix (not found, invalid, precondition, auth) and cancellations are answers,
// not failures: no line, as for REST.
func logFailure(ctx context.Context, log *slog.Logger, method string, err error) {
	code := status.Code(err)
	if err == nil || !telemetry.GRPCServerFailure(code) || telemetry.FailureLogged(ctx) {
		return
	}
	var reason string
	var e *apierr.Error
	if errors.As(err, &e) {
		reason = e.Reason()
	}
	log.ErrorContext(ctx, "gRPC call failed", "method", method, "code", code.String(), "reason", reason, "error", err.Error())
}

// encodeMessage and encodeBin encode the grpc-message and -bin headers as
// the gRPC HTTP/2 protocol says (percent-encoding; unpadded base64), the way
// grpc-go's transport does.
func encodeBin(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func encodeMessage(msg string) string {
	var sb strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= ' ' && c <= '~' && c != '%' {
			sb.WriteByte(c)
			continue
		}
		fmt.Fprintf(&sb, "%%%02X", c)
	}
	return sb.String()
}
