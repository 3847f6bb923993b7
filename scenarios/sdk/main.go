// Scenario "sdk": written with chall-manager's SDK, exactly as a ChallMaker writes one for
// upstream, to prove such scenarios run unchanged.
package main

import (
	"github.com/ctfer-io/chall-manager/sdk"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

func main() {
	sdk.Run(func(req *sdk.Request, resp *sdk.Response, opts ...pulumi.ResourceOption) error {
		host := req.Config.Additional["host"]
		if host == "" {
			host = "sdk.local"
		}
		resp.ConnectionInfo = pulumi.Sprintf("curl http://%s.%s", req.Config.Identity, host).ToStringOutput()
		resp.Flags = pulumi.ToStringArray([]string{
			sdk.Variate(req.Config.Identity, "CTF{sdk-scenario}"),
		}).ToStringArrayOutput()
		return nil
	})
}
