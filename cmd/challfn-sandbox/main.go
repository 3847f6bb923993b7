// Command challfn-sandbox contains the processes challfn runs but does not trust: the
// supervisor of every Pulumi engine process tree (`engine`) and the jail of every
// scenario program (`jail`). Install it next to the pulumi binary
// (scripts/install-pulumi.sh puts it in .bin/). See shared/sandbox and
// docs/threat-model.md.
package main

import (
	"os"

	"github.com/challfn/challfn/shared/sandbox"
)

func main() { os.Exit(sandbox.Main(os.Args[1:], os.Stdout, os.Stderr)) }
