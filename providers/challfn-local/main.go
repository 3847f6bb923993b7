// Command pulumi-resource-challfn-local is a Pulumi resource provider for resources that live
// on the machine running the engine. Its one resource, challfn-local:index:Service, is a TCP
// service on 127.0.0.1 that answers every connection with one line (a challenge flag): the
// smallest thing a player can really reach, for challfn's example scenario and tests.
//
// The binary has two modes:
//
//	pulumi-resource-challfn-local <engine address>   the provider, started by the engine
//	pulumi-resource-challfn-local serve --id <id>    one Service, started by the provider
//
// The engine finds it on PATH (an "ambient" plugin): install it next to the Pulumi CLI
// (scripts/install-providers.sh). Processes outlive the provider and the engine; their state
// (pid, port, id) is in the resource outputs, so any later Pulumi run can delete them.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == serveArg {
		if err := serveMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "challfn-local serve:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := providerMain(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "challfn-local:", err)
		os.Exit(1)
	}
}
