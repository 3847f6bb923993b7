// Command challfn-janitor serves the janitor function (a CloudEvent function
// fired by a scheduler) with the functions framework.
package main

import (
	"github.com/challfn/challfn/functions/janitor"
	"github.com/challfn/challfn/shared/funcmain"
)

func main() { funcmain.Run("challfn-"+janitor.Name, janitor.Name, nil) }
