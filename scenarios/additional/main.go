// Scenario "additional": builds connection_info from the `additional` map (a JSON object
// string in config `<project>:additional`) and keeps one component resource in the state so
// that destroy has something to delete.
package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
)

type instance struct {
	pulumi.ResourceState
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
		if msg, ok := additional["fail"]; ok {
			return fmt.Errorf("failing on request: %s", msg)
		}
		// Fails deployments but not previews: a registration that passes, then
		// instances (pooled ones included) that do not.
		if msg, ok := additional["fail-up"]; ok && !ctx.DryRun() {
			return fmt.Errorf("failing on request: %s", msg)
		}
		// A slow deployment, for tests that act while an up is running.
		if d, err := time.ParseDuration(additional["sleep"]); err == nil && !ctx.DryRun() {
			time.Sleep(d)
		}

		var inst instance
		if err := ctx.RegisterComponentResource("challfn:scenario:Instance", "instance-"+id, &inst); err != nil {
			return err
		}

		keys := make([]string, 0, len(additional))
		for k := range additional {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, k+"="+additional[k])
		}
		ctx.Export("connection_info", pulumi.String(id+"?"+strings.Join(parts, "&")))
		ctx.Export("flags", pulumi.ToStringArray([]string{"CTF{" + id + "}"}))
		return nil
	})
}
