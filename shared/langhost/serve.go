package langhost

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"

	"github.com/challfn/challfn/shared/config"
	"github.com/challfn/challfn/shared/sandbox"
)

// engineCheck is how often the host checks that its engine is still there: a host whose
// engine died (kill -9) exits instead of waiting for a Run that never comes.
const engineCheck = 2 * time.Second

// Main is the plugin's entry point: it parses the arguments the engine passes (flags such as
// -tracing or -binary are accepted and ignored; the last positional argument, when given, is
// the engine address), serves the LanguageRuntime service on a loopback port, prints that
// port on stdout for the engine, and blocks until the server stops.
func Main(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("pulumi-language-go", flag.ContinueOnError)
	fs.String("tracing", "", "ignored")
	fs.String("binary", "", "ignored: use runtime.options.binary in Pulumi.yaml")
	fs.String("root", "", "ignored")
	cfg, err := config.LoadLanghost(os.Getenv)
	if err != nil {
		return err
	}
	cacheDir := fs.String("cache", cfg.CacheDir, "where compiled programs are kept")
	if err := fs.Parse(args); err != nil {
		return err
	}
	engine := ""
	if rest := fs.Args(); len(rest) > 0 {
		engine = rest[len(rest)-1]
	}

	// The environment holds the stacks' passphrase (the engine's, passed on to its
	// plugins): no program of the same uid may read it through /proc.
	_ = sandbox.SetUndumpable()
	host := New(engine, *cacheDir)
	host.Sandbox.Mode = cfg.Sandbox
	host.Hide = cfg.Hide
	if cfg.Sandbox != sandbox.Off {
		self, _ := os.Executable()
		// Not found: Runner refuses the jails and Require fails each Run, saying why.
		host.Sandbox.Bin, _ = sandbox.FindBin(cfg.SandboxBin, self)
		// Without a jail, a program's daemons come back to the host, which ends them.
		_ = sandbox.SetSubreaper()
		// Ended by the engine (SIGINT, its plugin shutdown) or by challfn-sandbox's
		// supervisor (SIGTERM): end the programs' trees first.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		go func() {
			<-sigs
			sandbox.KillDescendants()
			os.Exit(1)
		}()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
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
	if engine != "" {
		// Once the engine stops answering, nobody will read a result: exit at once (the
		// program's jail dies with this process).
		lost, gone := context.WithCancel(ctx)
		if err := rpcutil.Healthcheck(lost, engine, engineCheck, gone); err == nil {
			go func() {
				<-lost.Done()
				if ctx.Err() == nil {
					fmt.Fprintln(os.Stderr, "pulumi-language-go: the engine at", engine, "is gone; exiting")
					os.Exit(1)
				}
			}()
		}
	}
	if err := <-handle.Done; err != nil {
		return fmt.Errorf("language host stopped: %w", err)
	}
	return nil
}
