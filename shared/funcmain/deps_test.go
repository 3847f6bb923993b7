package funcmain_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestFunctionBinariesLinkNoLocalSupport: the function binaries link no etcd
// server, OCI registry, broker, in-memory store nor test helper: those serve
// the local run and the tests (internal/...), and would only add to the cold
// start of every function instance.
func TestFunctionBinariesLinkNoLocalSupport(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "../../cmd/challfn-challenge", "../../cmd/challfn-instance", "../../cmd/challfn-janitor").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	forbidden := []string{
		"go.etcd.io/etcd/server/", "go.etcd.io/bbolt", "go.etcd.io/raft",
		"github.com/google/go-containerregistry/pkg/registry",
		"github.com/challfn/challfn/internal/",
		"github.com/challfn/challfn/shared/memstore", "github.com/challfn/challfn/shared/storetest",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 100 {
		t.Fatalf("go list gave %d packages: %s", len(deps), out)
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) || strings.HasSuffix(d, "/etcdtest") {
				t.Errorf("a function binary links %s", d)
			}
		}
	}
}
