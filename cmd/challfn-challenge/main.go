// Command challfn-challenge serves the challenge function (the ChallengeStore
// REST routes) with the functions framework.
package main

import (
	"net/http"

	"github.com/challfn/challfn/functions/challenge"
	"github.com/challfn/challfn/shared/funcmain"
)

func main() {
	funcmain.Run("challfn-"+challenge.Name, challenge.Name, http.HandlerFunc(challenge.Serve))
}
