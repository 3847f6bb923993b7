// Scenario "example-tcp": one real service per instance, reachable by the player. It starts
// a TCP service on 127.0.0.1 (a free port) that answers every connection with the instance's
// flag, and exports `nc 127.0.0.1 <port>` as connection_info. Destroying the instance stops
// the service.
//
// The flag is CTF{<identity>} unless the instance's additional config sets `flag`; changing
// it replaces the service (new process, new port).
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
		flag := "CTF{" + id + "}"
		if f := additional["flag"]; f != "" {
			flag = f
		}

		svc, err := NewService(ctx, "service", &ServiceArgs{Flag: pulumi.String(flag)})
		if err != nil {
			return err
		}
		ctx.Export("connection_info", pulumi.Sprintf("nc %s %d", svc.Host, svc.Port))
		ctx.Export("flag", svc.Flag)
		return nil
	})
}
