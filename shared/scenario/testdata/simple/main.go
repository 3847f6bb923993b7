// Command simple is a minimal challfn scenario used in tests: it creates no
// resource and exports outputs derived from the identity it is given. It
// fails on request (additional "fail"), to test failing previews.
package main

import (
	"encoding/json"
	"fmt"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		cfg := config.New(ctx, "")
		id := cfg.Require("identity")
		additional := map[string]string{}
		if raw := cfg.Get("additional"); raw != "" {
			if err := json.Unmarshal([]byte(raw), &additional); err != nil {
				return fmt.Errorf("additional is not a JSON object of strings: %w", err)
			}
		}
		if msg, ok := additional["fail"]; ok {
			return fmt.Errorf("failing on request: %s", msg)
		}
		ctx.Export("connection_info", pulumi.String("nc "+id+".simple.local 1337"))
		ctx.Export("flag", pulumi.String("CTF{simple-"+id+"}"))
		return nil
	})
}
