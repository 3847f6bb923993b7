// Scenario "hostile": a scenario that behaves badly on request, for the security tests.
// Its behaviour is chosen by additional["mode"] (the instance's additional, so that the
// preview run at registration, which sees only the challenge's, stays harmless):
//
//   - "dump": connection_info is a JSON object of everything the program can see — its
//     whole environment, its arguments and its Pulumi config — so a test can look for
//     what must not be there (the source id, challfn's secrets);
//   - "leak": prints the environment's secrets and the whole environment to stderr, then
//     fails with an error quoting the passphrase;
//   - "panic": panics (a Go stack trace with file paths on stderr);
//   - "hang": never returns (a scenario that never exits).
//
// With no mode it behaves like "outputs".
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

// secrets are the variables that hold challfn's own credentials.
var secrets = []string{
	"PULUMI_CONFIG_PASSPHRASE", "API_TOKENS", "OCI_USERNAME", "OCI_PASSWORD",
	"ETCD_USERNAME", "ETCD_PASSWORD", "PULUMI_ACCESS_TOKEN",
}

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
		info := "nc " + id + ".hostile.local 1337"
		switch additional["mode"] {
		case "dump":
			b, err := json.Marshal(map[string]any{
				"env":    os.Environ(),
				"args":   os.Args,
				"config": os.Getenv("PULUMI_CONFIG"),
				"stack":  ctx.Stack(),
				"proj":   ctx.Project(),
			})
			if err != nil {
				return err
			}
			info = string(b)
		case "leak":
			for _, k := range secrets {
				fmt.Fprintf(os.Stderr, "LEAK %s=%s\n", k, os.Getenv(k))
			}
			fmt.Fprintln(os.Stderr, "LEAK env:", strings.Join(os.Environ(), " "))
			return fmt.Errorf("LEAK failing with passphrase %q", os.Getenv("PULUMI_CONFIG_PASSPHRASE"))
		case "panic":
			panic("LEAK hostile scenario panics on purpose")
		case "hang":
			if !ctx.DryRun() {
				select {}
			}
		}
		ctx.Export("connection_info", pulumi.String(info))
		ctx.Export("flag", pulumi.String("CTF{"+id+"}"))
		return nil
	})
}
