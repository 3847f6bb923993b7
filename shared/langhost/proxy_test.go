package langhost

import (
	"context"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// fakeEngine stands for the engine's two services and records what reaches it.
type fakeEngine struct {
	pulumirpc.UnimplementedResourceMonitorServer
	pulumirpc.UnimplementedEngineServer
	mu    sync.Mutex
	calls []string
}

func (f *fakeEngine) record(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeEngine) RegisterResource(_ context.Context, r *pulumirpc.RegisterResourceRequest) (*pulumirpc.RegisterResourceResponse, error) {
	f.record("register " + r.GetType())
	return &pulumirpc.RegisterResourceResponse{Urn: "urn:" + r.GetName()}, nil
}

func (f *fakeEngine) ReadResource(_ context.Context, r *pulumirpc.ReadResourceRequest) (*pulumirpc.ReadResourceResponse, error) {
	f.record("read " + r.GetType())
	return &pulumirpc.ReadResourceResponse{}, nil
}

func (f *fakeEngine) Invoke(_ context.Context, r *pulumirpc.ResourceInvokeRequest) (*pulumirpc.InvokeResponse, error) {
	f.record("invoke " + r.GetTok())
	return &pulumirpc.InvokeResponse{}, nil
}

func (f *fakeEngine) Log(_ context.Context, r *pulumirpc.LogRequest) (*emptypb.Empty, error) {
	f.record("log " + r.GetMessage())
	return &emptypb.Empty{}, nil
}

// TestEngineProxy: what a jailed program's calls become on their way to the engine.
func TestEngineProxy(t *testing.T) {
	fake := &fakeEngine{}
	srv := grpc.NewServer()
	pulumirpc.RegisterResourceMonitorServer(srv, fake)
	pulumirpc.RegisterEngineServer(srv, fake)
	el, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(el)
	defer srv.Stop()

	var warned []string
	p, err := newEngineProxy(el.Addr().String(), 30, func(s string) { warned = append(warned, s) })
	if err != nil {
		t.Fatal(err)
	}
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.serve(pl)
	defer p.stop()
	conn, err := grpc.NewClient(pl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mon, eng := pulumirpc.NewResourceMonitorClient(conn), pulumirpc.NewEngineClient(conn)
	ctx := context.Background()

	for _, tc := range []struct {
		name   string
		call   func() error
		denied bool
	}{
		{"a resource", func() error {
			r, err := mon.RegisterResource(ctx, &pulumirpc.RegisterResourceRequest{Type: "challfn-local:index:Service", Name: "svc"})
			if err == nil && r.GetUrn() != "urn:svc" {
				t.Errorf("answer %v not forwarded", r)
			}
			return err
		}, false},
		{"a StackReference", func() error {
			_, err := mon.RegisterResource(ctx, &pulumirpc.RegisterResourceRequest{Type: "pulumi:pulumi:StackReference", Name: "x"})
			return err
		}, true},
		{"a StackReference read", func() error {
			_, err := mon.ReadResource(ctx, &pulumirpc.ReadResourceRequest{Type: "pulumi:pulumi:StackReference", Name: "x", Id: "i"})
			return err
		}, true},
		{"another stack's outputs", func() error {
			_, err := mon.Invoke(ctx, &pulumirpc.ResourceInvokeRequest{Tok: "pulumi:pulumi:readStackOutputs"})
			return err
		}, true},
		{"another stack's resources", func() error {
			_, err := mon.Invoke(ctx, &pulumirpc.ResourceInvokeRequest{Tok: "pulumi:pulumi:readStackResourceOutputs"})
			return err
		}, true},
		{"a provider function", func() error {
			_, err := mon.Invoke(ctx, &pulumirpc.ResourceInvokeRequest{Tok: "kubernetes:core/v1:getNamespace"})
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if tc.denied != (status.Code(err) == codes.PermissionDenied) || (!tc.denied && err != nil) {
				t.Fatalf("err = %v, denied %v", err, tc.denied)
			}
		})
	}
	// Logs: 30 bytes (two 14-byte LogRequests) pass, the rest is dropped but answered,
	// with one warning.
	for _, m := range []string{"0123456789", "abcdefghij", "ABCDEFGHIJ", "klmnopqrst"} {
		if _, err := eng.Log(ctx, &pulumirpc.LogRequest{Severity: pulumirpc.LogSeverity_INFO, Message: m}); err != nil {
			t.Fatalf("Log: %v", err)
		}
	}
	fake.mu.Lock()
	calls := slices.Clone(fake.calls)
	fake.mu.Unlock()
	want := []string{"register challfn-local:index:Service", "invoke kubernetes:core/v1:getNamespace", "log 0123456789", "log abcdefghij"}
	if len(calls) != len(want)+1 || !slices.Equal(calls[:len(want)], want) || !strings.Contains(calls[len(want)], "further log messages are dropped") {
		t.Fatalf("the engine got %q", calls)
	}
	if len(warned) != 1 {
		t.Fatalf("warnings to the program's stderr: %q", warned)
	}
}
