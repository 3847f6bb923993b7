// Scenario "outputs": no resource, only the outputs challfn reads back, derived from the
// identity so that tests can tell instances apart.
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		id := config.New(ctx, "").Require("identity")
		ctx.Export("connection_info", pulumi.String("nc "+id+".outputs.local 1337"))
		ctx.Export("flag", pulumi.String("CTF{"+id+"}"))
		ctx.Export("flags", pulumi.ToStringArray([]string{"CTF{second-" + id + "}"}))
		return nil
	})
}
