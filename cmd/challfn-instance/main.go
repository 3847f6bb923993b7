// Command challfn-instance serves the instance function (the InstanceManager
// REST routes and the asynchronous-work CloudEvents at /events) with the
// functions framework.
package main

import (
	"net/http"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/shared/funcmain"
)

func main() { funcmain.Run("challfn-"+instance.Name, instance.Name, http.HandlerFunc(instance.Serve)) }
