package e2e

import (
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
)

// The function processes as deployed (the cmd/ mains through
// shared/funcmain, one process per function, sharing etcd, the Pulumi
// backend and the scenario store): each serves its own gRPC service and its
// REST routes on its one port, and only its own service, as the Gateway and
// the load balancer route them.
func TestGRPCFunctionProcesses(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Events: testenv.Inline})
	cli := testenv.ChallManager(t, "chall-manager-cli")
	ref := env.Scenario(t, "outputs")
	tmp := t.TempDir()
	fn := map[string]*monitoringFunction{}
	for _, target := range []string{"challenge", "instance"} {
		fn[target] = startMonitoringFunction(t, tmp, target, functionEnv(env, "CACHE_DIR="+filepath.Join(tmp, target+"-cache")))
	}
	target := func(f *monitoringFunction) string { return strings.TrimPrefix(f.URL, "http://") }

	upWant(t, "challenge create on the challenge function",
		upRun(t, nil, cli, "challenge", "--url="+target(fn["challenge"]), "create", "--id", "p1", "--scenario", ref, "--timeout", "10m"),
		"[+] Challenge p1 created")
	out := upRun(t, nil, cli, "instance", "--url="+target(fn["instance"]), "create", "--challenge_id", "p1", "--source_id", "s1")
	if !upConnect.MatchString(out) {
		t.Fatalf("instance create on the instance function: %s", out)
	}
	// REST on the same ports.
	if r := ctDo(t, fn["challenge"].URL, "GET", "/api/v1/challenge/p1", ""); r.Status != 200 {
		t.Fatalf("REST on the challenge function: %d %s", r.Status, r.Body)
	}
	if r := ctDo(t, fn["instance"].URL, "GET", "/api/v1/instance/p1/s1", ""); r.Status != 200 {
		t.Fatalf("REST on the instance function: %d %s", r.Status, r.Body)
	}
	// Each function serves its own service only.
	_, err := gcCall[api.Challenge](gcDialTarget(t, target(fn["instance"])), gcChallenge+"RetrieveChallenge", &api.RetrieveChallengeRequest{ID: "p1"})
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("ChallengeStore on the instance function: %v", err)
	}
	in, err := gcCall[api.Instance](gcDialTarget(t, target(fn["instance"])), gcInstance+"RetrieveInstance", &api.RetrieveInstanceRequest{ChallengeID: "p1", SourceID: "s1"})
	if err != nil || in.SourceID != "s1" {
		t.Fatalf("RetrieveInstance on the instance function: %+v %v", in, err)
	}
	upWant(t, "instance delete", upRun(t, nil, cli, "instance", "--url="+target(fn["instance"]), "delete", "--challenge_id", "p1", "--source_id", "s1"),
		"[+] Instance <p1,s1> deleted")
	upWant(t, "challenge delete", upRun(t, nil, cli, "challenge", "--url="+target(fn["challenge"]), "delete", "--id", "p1"),
		"[-] Challenge p1 deleted")
	if k, s := env.Keys(t), env.Stacks(t); len(k)+len(s) != 0 {
		t.Errorf("left: keys %v stacks %v", k, s)
	}
}
