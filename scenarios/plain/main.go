// Scenario "plain": plain pulumi.Run, no SDK, exporting only connection_info, as
// chall-manager's "no-sdk" example does: the instance has no flag.
package main

import (
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		identity := config.New(ctx, "plain").Get("identity")
		ctx.Export("connection_info", pulumi.Sprintf("nc %s.plain.local 1337", identity))
		return nil
	})
}
