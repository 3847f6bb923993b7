// Command pulumi-language-go is challfn's Go language plugin for the Pulumi engine. Install
// it next to the pulumi binary (scripts/install-pulumi.sh puts both in .bin/).
package main

import (
	"fmt"
	"os"

	"github.com/challfn/challfn/shared/langhost"
)

func main() {
	if err := langhost.Main(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "pulumi-language-go:", err)
		os.Exit(1)
	}
}
