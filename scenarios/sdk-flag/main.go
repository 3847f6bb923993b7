// Scenario "sdk-flag": chall-manager's SDK v0.6.6 with resp.ConnectionInfo and the
// deprecated resp.Flag (one flag per instance, varied by sdk.Variate), as older scenarios
// and the SDK's own README write it.
package main

import (
	"github.com/ctfer-io/chall-manager/sdk"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

func main() {
	sdk.Run(func(req *sdk.Request, resp *sdk.Response, opts ...pulumi.ResourceOption) error {
		resp.ConnectionInfo = pulumi.Sprintf("nc %s.sdk-flag.local 1337", req.Config.Identity)
		resp.Flag = pulumi.Sprintf("CTF{%s}", sdk.Variate(req.Config.Identity, "deprecated-flag")).ToStringOutput()
		return nil
	})
}
