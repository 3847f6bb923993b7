package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// providerMain serves the provider over gRPC the way the engine expects from a plugin: listen
// on a loopback port, print it on stdout, serve until the engine goes away. It does what
// pkg/v3/resource/provider.Main does, without pulling in pkg/v3.
func providerMain(ctx context.Context, args []string) error {
	engine := engineAddress(args)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if engine != "" {
		// Stop when the engine stops answering (it died without closing us).
		if err := rpcutil.Healthcheck(ctx, engine, 5*time.Minute, cancel); err != nil {
			return fmt.Errorf("engine health check: %w", err)
		}
	}
	stop := make(chan bool)
	go func() {
		<-ctx.Done()
		close(stop)
	}()
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterResourceProviderServer(srv, plugin.NewProviderServer(newProvider()))
			return nil
		},
	})
	if err != nil {
		return err
	}
	// The plugin protocol: the first line on stdout is the port.
	fmt.Printf("%d\n", handle.Port)
	return <-handle.Done
}

// engineAddress returns the engine's address among the plugin arguments: the last one that is
// not a flag (the engine passes --logtostderr, -v=N and --tracing <url> before it).
func engineAddress(args []string) string {
	var addr string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--tracing" || a == "-tracing":
			i++
		case strings.HasPrefix(a, "-"):
		default:
			addr = a
		}
	}
	return addr
}
