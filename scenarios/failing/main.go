// Scenario "failing": registers a resource, then fails, so that tests can check that a failed
// create leaves nothing behind and that the program's error reaches the caller.
package main

import (
	"errors"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
)

type half struct {
	pulumi.ResourceState
}

func main() {
	pulumi.Run(func(ctx *pulumi.Context) error {
		var h half
		if err := ctx.RegisterComponentResource("challfn:scenario:Half", "half-done", &h); err != nil {
			return err
		}
		return errors.New("this scenario fails on purpose")
	})
}
