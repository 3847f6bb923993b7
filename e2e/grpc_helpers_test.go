package e2e

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
)

// Helpers of the gRPC tests (prefix "gc"). The client is plain grpc-go over
// h2c, with the wire types of shared/api encoded through upstream's
// descriptors; the upstream CLI and janitor tests use upstream's own
// generated code, and tools/chall-manager compares the descriptors.

const (
	gcChallenge = "/" + api.ChallengeStoreService + "/"
	gcInstance  = "/" + api.InstanceManagerService + "/"
	// gcTimeout bounds one call: a creation runs a deployment.
	gcTimeout = 3 * time.Minute
)

// gcTarget is the gRPC target (host:port) of an environment.
func gcTarget(env *testenv.Env) string { return strings.TrimPrefix(env.URL, "http://") }

// gcDial connects to the environment's one address, as chall-manager-cli does
// (plaintext, insecure credentials).
func gcDial(t testing.TB, env *testenv.Env, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return gcDialTarget(t, gcTarget(env), opts...)
}

// gcDialTarget connects to a gRPC target (host:port).
func gcDialTarget(t testing.TB, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(api.Codec{})),
	}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// gcCall makes one unary call.
func gcCall[Resp any](conn *grpc.ClientConn, method string, req any, opts ...grpc.CallOption) (*Resp, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gcTimeout)
	defer cancel()
	out := new(Resp)
	if err := conn.Invoke(ctx, method, req, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

// gcStream reads a whole server stream: the items received before the
// status, and the status's error.
func gcStream[Item any](conn *grpc.ClientConn, method string, req any, opts ...grpc.CallOption) ([]*Item, error) {
	ctx, cancel := context.WithTimeout(context.Background(), gcTimeout)
	defer cancel()
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, opts...)
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(req); err != nil {
		return nil, err
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	var out []*Item
	for {
		it := new(Item)
		err := s.RecvMsg(it)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, it)
	}
}

// gcStatusJSON renders a call's status as grpc-gateway renders it for REST
// (protojson, EmitUnpopulated), so one golden body checks both transports.
func gcStatusJSON(t testing.TB, err error) []byte {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("not a gRPC status: %v", err)
	}
	b, merr := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(st.Proto())
	if merr != nil {
		t.Fatal(merr)
	}
	return b
}

// gcJSON is a message's REST JSON, to compare a gRPC answer with the REST
// answer of the same request.
func gcJSON(t testing.TB, m api.Message) []byte {
	t.Helper()
	b, err := api.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
