// Command simple is a minimal challfn scenario used in tests: it creates no
// resource and exports outputs derived from the identity it is given.
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		cfg := config.New(ctx, ctx.Project())
		id := cfg.Get("identity")
		ctx.Export("connection_info", pulumi.String("nc "+id+".simple.local 1337"))
		ctx.Export("flag", pulumi.String("CTF{simple-"+id+"}"))
		return nil
	})
}
