// Command challfn-scenario is the ChallMaker's tool: it packs a scenario
// folder as an OCI artifact, exactly as chall-manager expects it, and pushes
// it to a registry.
//
//	challfn-scenario push [--insecure] [--username U --password P] <dir> <ref>
//
// Credentials default to OCI_USERNAME / OCI_PASSWORD. On success it prints
// the manifest digest and the pinned reference (ref@digest), which is what a
// challenge should be registered with to never move.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/challfn/challfn/shared/scenario"
)

const usage = `usage: challfn-scenario push [--insecure] [--username U --password P] <dir> <ref>

Packs <dir> (a Pulumi Go project: Pulumi.yaml plus sources or a prebuilt
binary) as a scenario artifact and pushes it to <ref> (registry/repository[:tag],
tag "latest" when omitted).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "challfn-scenario:", err)
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "push" {
		fmt.Fprint(stderr, usage)
		return errors.New("unknown or missing command")
	}
	fs := flag.NewFlagSet("push", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	insecure := fs.Bool("insecure", false, "talk plain HTTP to the registry")
	username := fs.String("username", os.Getenv("OCI_USERNAME"), "registry username (default $OCI_USERNAME)")
	password := fs.String("password", os.Getenv("OCI_PASSWORD"), "registry password (default $OCI_PASSWORD)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return errors.New("push takes exactly <dir> and <ref>")
	}
	dir, ref := fs.Arg(0), fs.Arg(1)
	dg, err := scenario.Push(ctx, dir, ref, scenario.RegistryOptions{
		PlainHTTP: *insecure,
		Username:  *username,
		Password:  *password,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Digest: %s\nReference: %s@%s\n", dg, strings.SplitN(ref, "@", 2)[0], dg)
	return nil
}
