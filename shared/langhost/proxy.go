package langhost

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// A jailed program reaches the engine only through the language host (shared/sandbox
// serves the engine's two addresses inside the jail and hands the listeners here). The
// host answers them with a proxy that forwards every gRPC call, message for message, to
// the engine, except what a scenario must not ask for:
//
//   - another stack's outputs or resources, which the engine reads from the backend for
//     any stack a program names: the builtin `pulumi:pulumi:StackReference` resource and
//     the `pulumi:pulumi:readStackOutputs` and `readStackResourceOutputs` functions;
//   - logs past LogMax bytes, which the engine would keep in memory until the end of the
//     operation: the rest is dropped, and the engine is told once.

// deniedTypes and deniedTokens are refused with PermissionDenied.
var (
	deniedTypes  = map[string]bool{"pulumi:pulumi:StackReference": true}
	deniedTokens = map[string]bool{"pulumi:pulumi:readStackOutputs": true, "pulumi:pulumi:readStackResourceOutputs": true}
)

// maxMessage is the engine's own message size limit (rpcutil's, unexported there).
const maxMessage = 400 << 20

// errDenied is the answer to a call a scenario may not make.
var errDenied = status.Error(codes.PermissionDenied, "challfn: a scenario cannot read other stacks")

// engineProxy forwards a jailed program's calls to one of the engine's services.
type engineProxy struct {
	conn   *grpc.ClientConn
	srv    *grpc.Server
	logMax int64
	logged atomic.Int64
	warned atomic.Bool
	// warn writes to the program's stderr (which the engine and the error message see).
	warn func(string)
	wg   sync.WaitGroup
}

func newEngineProxy(target string, logMax int64, warn func(string)) (*engineProxy, error) {
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage)))
	if err != nil {
		return nil, fmt.Errorf("engine proxy: %w", err)
	}
	p := &engineProxy{conn: conn, logMax: logMax, warn: warn}
	p.srv = grpc.NewServer(
		grpc.UnknownServiceHandler(p.handle),
		grpc.ForceServerCodecV2(rawCodec{}),
		grpc.MaxRecvMsgSize(maxMessage),
		grpc.MaxSendMsgSize(maxMessage),
	)
	return p, nil
}

// serve answers the connections of l (inside the jail) until stop.
func (p *engineProxy) serve(l net.Listener) {
	p.wg.Go(func() { _ = p.srv.Serve(l) })
}

func (p *engineProxy) stop() {
	p.srv.Stop()
	p.wg.Wait()
	_ = p.conn.Close()
}

// handle forwards one call, whatever its kind (unary or streaming).
func (p *engineProxy) handle(_ any, in grpc.ServerStream) error {
	method, ok := grpc.MethodFromServerStream(in)
	if !ok {
		return status.Error(codes.Internal, "no method")
	}
	ctx := in.Context()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		ctx = metadata.NewOutgoingContext(ctx, md.Copy())
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	first := &rawFrame{}
	if err := in.RecvMsg(first); err != nil {
		return err
	}
	if err := p.check(method, first.b); err != nil {
		return err
	}
	if method == pulumirpc.Engine_Log_FullMethodName && p.drop(len(first.b)) {
		// Answered as the engine would (google.protobuf.Empty), not forwarded.
		return in.SendMsg(&rawFrame{})
	}
	out, err := p.conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		return err
	}
	if err := out.SendMsg(first); err != nil {
		return err
	}
	// The client's further messages (streaming calls), checked the same way. A refused
	// one ends the call with its error.
	refused := make(chan error, 1)
	go func() {
		for {
			m := &rawFrame{}
			if err := in.RecvMsg(m); err != nil {
				_ = out.CloseSend()
				return
			}
			if err := p.check(method, m.b); err != nil {
				refused <- err
				cancel()
				return
			}
			if err := out.SendMsg(m); err != nil {
				return
			}
		}
	}()
	for {
		m := &rawFrame{}
		if err := out.RecvMsg(m); err != nil {
			in.SetTrailer(out.Trailer())
			select {
			case rerr := <-refused:
				return rerr
			default:
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := in.SendMsg(m); err != nil {
			return err
		}
	}
}

// check refuses the calls that read other stacks.
func (p *engineProxy) check(method string, b []byte) error {
	switch method {
	case pulumirpc.ResourceMonitor_RegisterResource_FullMethodName:
		var r pulumirpc.RegisterResourceRequest
		if proto.Unmarshal(b, &r) == nil && deniedTypes[r.GetType()] {
			return errDenied
		}
	case pulumirpc.ResourceMonitor_ReadResource_FullMethodName:
		var r pulumirpc.ReadResourceRequest
		if proto.Unmarshal(b, &r) == nil && deniedTypes[r.GetType()] {
			return errDenied
		}
	case pulumirpc.ResourceMonitor_Invoke_FullMethodName:
		var r pulumirpc.ResourceInvokeRequest
		if proto.Unmarshal(b, &r) == nil && deniedTokens[r.GetTok()] {
			return errDenied
		}
	case pulumirpc.ResourceMonitor_Call_FullMethodName:
		var r pulumirpc.ResourceCallRequest
		if proto.Unmarshal(b, &r) == nil && deniedTokens[r.GetTok()] {
			return errDenied
		}
	}
	return nil
}

// drop tells whether a log message of n bytes goes past the budget; the first time, the
// engine gets one warning instead.
func (p *engineProxy) drop(n int) bool {
	if p.logMax <= 0 || p.logged.Add(int64(n)) <= p.logMax {
		return false
	}
	if !p.warned.Swap(true) {
		msg := fmt.Sprintf("challfn: the program logged more than %d bytes; its further log messages are dropped", p.logMax)
		p.warn(msg)
		b, _ := proto.Marshal(&pulumirpc.LogRequest{Severity: pulumirpc.LogSeverity_WARNING, Message: msg})
		_ = p.conn.Invoke(context.Background(), pulumirpc.Engine_Log_FullMethodName, &rawFrame{b}, &rawFrame{}, grpc.ForceCodecV2(rawCodec{}))
	}
	return true
}

// rawFrame is one gRPC message, as bytes: the proxy forwards them unchanged.
type rawFrame struct{ b []byte }

// rawCodec moves rawFrames; named "proto" so that both ends see the usual content type.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.(*rawFrame).b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	v.(*rawFrame).b = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }
