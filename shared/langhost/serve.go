package langhost

import (
	"flag"
	"fmt"
	"io"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
)

// Main is the plugin's entry point: it parses the arguments the engine passes (flags such as
// -tracing or -binary are accepted and ignored; the last positional argument, when given, is
// the engine address), serves the LanguageRuntime service on a loopback port, prints that
// port on stdout for the engine, and blocks until the server stops.
func Main(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pulumi-language-go", flag.ContinueOnError)
	fs.String("tracing", "", "ignored")
	fs.String("binary", "", "ignored: use runtime.options.binary in Pulumi.yaml")
	fs.String("root", "", "ignored")
	cacheDir := fs.String("cache", DefaultCacheDir(), "where compiled programs are kept")
	if err := fs.Parse(args); err != nil {
		return err
	}
	engine := ""
	if rest := fs.Args(); len(rest) > 0 {
		engine = rest[len(rest)-1]
	}

	host := New(engine, *cacheDir)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(s *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(s, host)
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("serve language host: %w", err)
	}
	fmt.Fprintf(stdout, "%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		return fmt.Errorf("language host stopped: %w", err)
	}
	return nil
}
