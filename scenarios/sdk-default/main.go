// Scenario "sdk-default": chall-manager's SDK v0.6.6 used the way its documentation writes
// most scenarios, setting only resp.ConnectionInfo. The SDK still exports "flags" (an
// output nobody set, which the engine stores as its unknown-value marker): challfn must
// deploy it with no flag, as chall-manager does.
package main

import (
	"github.com/ctfer-io/chall-manager/sdk"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

func main() {
	sdk.Run(func(req *sdk.Request, resp *sdk.Response, opts ...pulumi.ResourceOption) error {
		resp.ConnectionInfo = pulumi.Sprintf("curl -v https://%s.sdk-default.local", req.Config.Identity)
		return nil
	})
}
