// Scenario "sdk-both": chall-manager's SDK v0.6.6 with the deprecated resp.Flag and
// resp.Flags (a varied flag and the base one, as the flag variation guide writes it). The
// flag given by resp.Flag comes first, then resp.Flags in order.
package main

import (
	"github.com/ctfer-io/chall-manager/sdk"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

const base = "both-flags"

func main() {
	sdk.Run(func(req *sdk.Request, resp *sdk.Response, opts ...pulumi.ResourceOption) error {
		resp.ConnectionInfo = pulumi.Sprintf("nc %s.sdk-both.local 1337", req.Config.Identity).ToStringOutput()
		resp.Flag = pulumi.String("CTF{first}").ToStringOutput()
		resp.Flags = pulumi.StringArray{
			pulumi.Sprintf("CTF{%s}", sdk.Variate(req.Config.Identity, base)),
			pulumi.Sprintf("CTF{%s}", base),
		}.ToStringArrayOutput()
		return nil
	})
}
