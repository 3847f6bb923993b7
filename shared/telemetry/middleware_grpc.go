package telemetry

import (
	"context"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// GRPCServerHandler is the stats handler of challfn's gRPC servers: otelgrpc
// server spans named like upstream's ("api.v1.challenge.ChallengeStore/CreateChallenge"),
// continuing the caller's trace context from the `traceparent` metadata, and
// otelgrpc's rpc.server.* metrics, on t's providers. It is bound to t when
// the server is built (after Setup, at the function's cold start). With
// telemetry disabled the incoming trace context is still propagated, for log
// correlation and the events the call sends.
func (t *Telemetry) GRPCServerHandler() stats.Handler {
	return rpcEndNotifier{otelgrpc.NewServerHandler(
		otelgrpc.WithTracerProvider(t.tp),
		otelgrpc.WithMeterProvider(t.mp),
		otelgrpc.WithPropagators(propagator),
	)}
}

// rpcEndNotifier tells GRPCHandler when otelgrpc has ended a call's span.
// grpc-go's ServeHTTP returns as soon as the status is written, while the
// handler goroutine reports the end of the call (and otelgrpc ends its span)
// just after: a flush right after ServeHTTP could miss the server span.
type rpcEndNotifier struct{ stats.Handler }

func (n rpcEndNotifier) HandleRPC(ctx context.Context, s stats.RPCStats) {
	n.Handler.HandleRPC(ctx, s)
	w, ok := ctx.Value(rpcWaitKey{}).(*rpcWait)
	if !ok {
		return
	}
	switch s.(type) {
	case *stats.Begin:
		w.began.Store(true)
	case *stats.End:
		w.endOnce.Do(func() { close(w.ended) })
	}
}

type rpcWaitKey struct{}

// rpcWait is one HTTP request's gRPC call, begun and ended.
type rpcWait struct {
	began   atomic.Bool
	endOnce sync.Once
	ended   chan struct{}
}

// rpcEndWait bounds the wait for a call's end once its status is written: the
// handler goroutine only runs its deferred stats calls by then.
const rpcEndWait = 2 * time.Second

// GRPCHandler serves h, a gRPC server's net/http entry (grpc.Server.ServeHTTP),
// and flushes traces and metrics before the client sees the end of the call:
// grpc-go writes the status as HTTP/2 trailers, which net/http sends only
// when the handler returns; before flushing, it waits for the end of the
// otelgrpc span (rpcEndNotifier: grpc-go's ServeHTTP does not wait for its
// handler goroutine, which ends the span). Messages of a server stream still
// go out as they are sent; only the trailers wait for the flush.
//
// As Handler does for a 5xx answer, a call that ends with a server-side
// failure status (what the gateway maps to 5xx: UNKNOWN, DEADLINE_EXCEEDED,
// INTERNAL, UNAVAILABLE, DATA_LOSS) and had no ERROR line logged under its
// context gets one here (the server's interceptors log the cause when they
// know it; see FailureLogged).
func (t *Telemetry) GRPCHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// grpc-go serves the call with the request's context.
		ctx, mark := withFailureMark(r.Context())
		wait := &rpcWait{ended: make(chan struct{})}
		h.ServeHTTP(w, r.WithContext(context.WithValue(ctx, rpcWaitKey{}, wait)))
		// A call that began (stats.Begin comes before its status) ends soon
		// after ServeHTTP returns; one refused before it began never will.
		if wait.began.Load() {
			select {
			case <-wait.ended:
			case <-time.After(rpcEndWait):
			}
		}
		// The status is in the header map, sent as a trailer on return.
		if st := w.Header().Get("Grpc-Status"); GRPCServerFailure(grpcCode(st)) && !mark.logged.Load() {
			t.log.ErrorContext(ctx, "gRPC call failed", "method", r.URL.Path, "code", grpcCode(st).String())
		}
		t.Flush(ctx)
	})
}

// FailureLogged reports whether an ERROR line was logged under the context of
// the request (HTTP through Handler, gRPC through GRPCHandler) ctx belongs
// to: what explains a failure once.
func FailureLogged(ctx context.Context) bool {
	m, ok := ctx.Value(failureKey{}).(*failureMark)
	return ok && m.logged.Load()
}

// GRPCServerFailure reports whether a call ending with c failed on the
// server's side: the codes grpc-gateway answers with a 5xx other than 501.
func GRPCServerFailure(c grpccodes.Code) bool {
	switch c {
	case grpccodes.Unknown, grpccodes.DeadlineExceeded, grpccodes.Internal, grpccodes.Unavailable, grpccodes.DataLoss:
		return true
	}
	return false
}

func grpcCode(s string) grpccodes.Code {
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return grpccodes.OK
	}
	return grpccodes.Code(n)
}

// GRPCDialOption instruments a gRPC client (the etcd client, through
// etcd.Config.DialOptions) with UnaryClientInterceptor.
func GRPCDialOption(system string) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(UnaryClientInterceptor(system))
}

// UnaryClientInterceptor makes a client span "<system> <Method>" (for etcd:
// "etcd Txn", "etcd Range", "etcd LeaseGrant"...) of every unary call made
// inside a recording span, with the challenge id and identity of ctx.
//
// Calls outside a request (lease keep-alives, the counts read at metric
// collection, calls after the handler's span ended) get no span: they would
// be root spans of their own, or children of a finished request. Streams
// (watches, keep-alives) are not traced for the same reason: a watch outlives
// the step that started it; the lock spans cover the waits.
//
// Chosen over otelgrpc's stats handler because that one starts its span below
// the interceptors, where the request's ids cannot be added, and creates
// spans for every background call.
func UnaryClientInterceptor(system string) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		parent := trace.SpanFromContext(ctx)
		if !parent.IsRecording() {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		full := strings.TrimPrefix(method, "/") // "etcdserverpb.KV/Txn"
		_, name := path.Split(full)
		ctx, span := parent.TracerProvider().Tracer(ScopeName).Start(ctx, system+" "+name,
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(
				semconv.RPCSystemNameKey.String("grpc"),
				semconv.RPCMethod(full),
				semconv.DBSystemNameKey.String(system),
			))
		setContextAttrs(ctx, span)
		err := invoker(ctx, method, req, reply, cc, opts...)
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, status.Convert(err).Message())
		}
		span.End()
		return err
	}
}
