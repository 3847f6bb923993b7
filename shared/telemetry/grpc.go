package telemetry

import (
	"context"
	"path"
	"strings"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

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
