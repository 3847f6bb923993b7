package manifests

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// repoRoot finds the checkout from the test's working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "knative", "base", "kustomization.yaml")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("knative/base not found above the working directory")
		}
		dir = parent
	}
}

func clusterConfig(t testing.TB) ClusterConfig {
	t.Helper()
	cc, err := LoadFeaturesPatch(filepath.Join(repoRoot(t), "knative", "cluster", "config-features-patch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cc.H2CBackends, err = LoadH2CPatch(filepath.Join(repoRoot(t), "knative", "cluster", "kourier-internal-h2c-patch.yaml"), "kourier-system", "kourier-internal")
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// check is the whole pipeline the deployment goes through.
func check(source string, data []byte, cc ClusterConfig, p Policy) error {
	objs, err := Decode(source, data)
	if err != nil {
		return err
	}
	if err := ValidateKnative(context.Background(), objs, cc); err != nil {
		return err
	}
	return CheckInvariants(objs, p, cc)
}

var overlays = []string{"dev", "prod"}

func TestManifestFilesDecodeStrictly(t *testing.T) {
	root := filepath.Join(repoRoot(t), "knative")
	n := 0
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !isYAML(d.Name()) {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		// kustomizations and the ConfigMap patch are not Kubernetes objects;
		// monitoring/ mixes objects with the configuration files of its
		// ConfigMaps, so it is checked rendered (TestMonitoringStack).
		if d.Name() == "kustomization.yaml" || strings.HasPrefix(rel, "cluster"+string(filepath.Separator)) ||
			strings.HasPrefix(rel, "monitoring"+string(filepath.Separator)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		objs, err := Decode(rel, b)
		if err != nil {
			t.Errorf("%v", err)
		}
		n += len(objs)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no manifest found")
	}
	t.Logf("%d objects decoded strictly", n)
}

func TestOverlaysAreValid(t *testing.T) {
	cc := clusterConfig(t)
	for _, ov := range overlays {
		t.Run(ov, func(t *testing.T) {
			out, err := Render(filepath.Join(repoRoot(t), "knative", "overlays", ov))
			if err != nil {
				t.Fatal(err)
			}
			if err := check("overlays/"+ov, out, cc, DefaultPolicy()); err != nil {
				t.Fatalf("overlay %s:\n%v", ov, err)
			}
		})
	}
}

// The monitoring stack (written with the observability work) renders and
// decodes strictly into the Kubernetes types.
func TestMonitoringStack(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "knative", "monitoring")
	if _, err := os.Stat(filepath.Join(dir, "kustomization.yaml")); err != nil {
		t.Skip("knative/monitoring has no kustomization yet")
	}
	out, err := Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Decode("monitoring", out)
	if err != nil {
		t.Fatal(err)
	}
	if len(Find[*appsv1.Deployment](objs)) == 0 {
		t.Fatal("no Deployment in the monitoring stack")
	}
	for _, d := range Find[*appsv1.Deployment](objs) {
		for _, c := range d.Spec.Template.Spec.Containers {
			if err := pinned(c.Image); err != nil {
				t.Errorf("monitoring %s: %v", d.Name, err)
			}
		}
	}
}

// The shared volume is refused by a Knative cluster without our features
// patch: the patch file is what makes the deployment valid.
func TestFeaturesPatchIsNeeded(t *testing.T) {
	out, err := Render(filepath.Join(repoRoot(t), "knative", "overlays", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	err = check("overlays/prod", out, ClusterConfig{}, DefaultPolicy())
	if err == nil || !strings.Contains(err.Error(), "persistentVolumeClaim") {
		t.Fatalf("want a refusal of the persistentVolumeClaim volume, got %v", err)
	}
}

// Without the patch of Knative's ingress Service, the Gateway would speak
// HTTP/1.1 to it and gRPC calls would fail: the patch is what makes gRPC
// routing valid.
func TestH2CPatchIsNeeded(t *testing.T) {
	out, err := Render(filepath.Join(repoRoot(t), "knative", "overlays", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	cc := clusterConfig(t)
	if len(cc.H2CBackends) != 1 || cc.H2CBackends[0] != "kourier-system/kourier-internal:80" {
		t.Fatalf("h2c backends of the patch: %v", cc.H2CBackends)
	}
	cc.H2CBackends = nil
	err = check("overlays/prod", out, cc, DefaultPolicy())
	for _, path := range []string{"/api.v1.challenge.ChallengeStore", "/api.v1.instance.InstanceManager"} {
		if err == nil || !strings.Contains(err.Error(), path+" carries gRPC, but the gateway speaks HTTP/1.1") {
			t.Fatalf("want a refusal of %s without h2c to the backend, got %v", path, err)
		}
	}
}

// doc is one rendered document as generic YAML, for mutation.
type doc = map[string]any

func parseDocs(t testing.TB, data []byte) []doc {
	t.Helper()
	raw, err := SplitDocuments(data)
	if err != nil {
		t.Fatal(err)
	}
	docs := make([]doc, 0, len(raw))
	for _, r := range raw {
		var d doc
		if err := yaml.Unmarshal(r, &d); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, d)
	}
	return docs
}

func joinDocs(t testing.TB, docs []doc) []byte {
	t.Helper()
	var parts []string
	for _, d := range docs {
		b, err := yaml.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, string(b))
	}
	return []byte(strings.Join(parts, "---\n"))
}

// node walks a dotted path ("spec.template.spec.containers.0.image") and
// returns the parent container and the last key.
func node(t testing.TB, d doc, path string) (any, string) {
	t.Helper()
	keys := splitPath(path)
	var cur any = d
	for _, k := range keys[:len(keys)-1] {
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[k]
			if !ok {
				next = map[string]any{}
				c[k] = next
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i >= len(c) {
				t.Fatalf("bad index %q in %s", k, path)
			}
			cur = c[i]
		default:
			t.Fatalf("cannot walk %s at %q", path, k)
		}
	}
	return cur, keys[len(keys)-1]
}

// splitPath splits on dots, except escaped ones ("a\\.b" is one key).
func splitPath(path string) []string {
	var keys []string
	var cur strings.Builder
	for i := 0; i < len(path); i++ {
		switch {
		case path[i] == '\\' && i+1 < len(path) && path[i+1] == '.':
			cur.WriteByte('.')
			i++
		case path[i] == '.':
			keys = append(keys, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(path[i])
		}
	}
	return append(keys, cur.String())
}

func set(t testing.TB, d doc, path string, v any) {
	t.Helper()
	parent, k := node(t, d, path)
	switch p := parent.(type) {
	case map[string]any:
		p[k] = v
	case []any:
		i, _ := strconv.Atoi(k)
		p[i] = v
	}
}

func del(t testing.TB, d doc, path string) {
	t.Helper()
	parent, k := node(t, d, path)
	m, ok := parent.(map[string]any)
	if !ok {
		t.Fatalf("%s: not a map", path)
	}
	if _, ok := m[k]; !ok {
		t.Fatalf("%s: nothing to delete", path)
	}
	delete(m, k)
}

func get(t testing.TB, d doc, path string) any {
	t.Helper()
	parent, k := node(t, d, path)
	switch p := parent.(type) {
	case map[string]any:
		return p[k]
	case []any:
		i, _ := strconv.Atoi(k)
		return p[i]
	}
	return nil
}

// pick returns the one document of that kind and name.
func pick(t testing.TB, docs []doc, kind, name string) doc {
	t.Helper()
	for _, d := range docs {
		if d["kind"] == kind && get(t, d, "metadata.name") == name {
			return d
		}
	}
	t.Fatalf("no %s %s", kind, name)
	return nil
}

func drop(t testing.TB, docs []doc, kind, name string) []doc {
	t.Helper()
	out := docs[:0:0]
	for _, d := range docs {
		if d["kind"] == kind && get(t, d, "metadata.name") == name {
			continue
		}
		out = append(out, d)
	}
	if len(out) == len(docs) {
		t.Fatalf("no %s %s to drop", kind, name)
	}
	return out
}

// TestBrokenCopies feeds deliberately broken copies of the real, rendered
// prod deployment through the validation: each must be refused, with the
// reason expected.
func TestBrokenCopies(t *testing.T) {
	cc := clusterConfig(t)
	rendered, err := Render(filepath.Join(repoRoot(t), "knative", "overlays", "prod"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		ksvc = "Service" // serving.knative.dev or v1: pick by name
		tpl  = "spec.template.spec."
		ctr  = "spec.template.spec.containers.0."
	)
	cases := []struct {
		name   string
		mutate func(t *testing.T, docs []doc) []doc
		want   string
	}{
		{"timeout above Knative maximum", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-instance"), tpl+"timeoutSeconds", 3600)
			return d
		}, "expected 0 <= 3600 <= 600"},
		{"timeout shorter than a deployment", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-instance"), tpl+"timeoutSeconds", 300)
			return d
		}, "shorter than DEPLOY_TIMEOUT"},
		{"timeout unset (Knative default 300)", func(t *testing.T, d []doc) []doc {
			del(t, pick(t, d, ksvc, "challfn-challenge"), tpl+"timeoutSeconds")
			return d
		}, "timeoutSeconds 300 is shorter"},
		{"DEPLOY_TIMEOUT leaves no margin", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "ConfigMap", "challfn-config"), "data.DEPLOY_TIMEOUT", "590s")
			return d
		}, "shorter than DEPLOY_TIMEOUT 9m50s"},
		{"unknown field (typo)", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-janitor"), tpl+"containerConcurency", 1)
			return d
		}, `unknown field "containerConcurency"`},
		{"unknown kind", func(t *testing.T, d []doc) []doc {
			pick(t, d, "PodDisruptionBudget", "etcd")["kind"] = "PodDisruptionBudgett"
			return d
		}, "unknown kind"},
		{"public visibility", func(t *testing.T, d []doc) []doc {
			del(t, pick(t, d, ksvc, "challfn-challenge"), "metadata.labels.networking\\.knative\\.dev/visibility")
			return d
		}, "must be cluster-local"},
		{"HTTP readiness probe on the CloudEvent janitor", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-janitor"), ctr+"readinessProbe", map[string]any{"httpGet": map[string]any{"path": "/"}})
			return d
		}, "HTTP readiness probe on a CloudEvent function"},
		{"image latest", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-instance"), ctr+"image", "registry.example.com/challfn/challfn-instance:latest")
			return d
		}, "uses the tag latest"},
		{"image placeholder left", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-janitor"), ctr+"image", "challfn-janitor:0.1.0")
			return d
		}, "not qualified with a registry host"},
		{"image untagged", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-instance"), ctr+"image", "registry.example.com/challfn/challfn-instance")
			return d
		}, "neither tag nor digest"},
		{"unlimited concurrency", func(t *testing.T, d []doc) []doc {
			del(t, pick(t, d, ksvc, "challfn-challenge"), tpl+"containerConcurrency")
			return d
		}, "containerConcurrency must be set"},
		{"min-scale above max-scale", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-janitor"), "spec.template.metadata.annotations.autoscaling\\.knative\\.dev/min-scale", "3")
			return d
		}, "max-scale"},
		{"secret not mounted", func(t *testing.T, d []doc) []doc {
			envFrom := get(t, pick(t, d, ksvc, "challfn-instance"), ctr+"envFrom").([]any)
			set(t, pick(t, d, ksvc, "challfn-instance"), ctr+"envFrom", envFrom[:1])
			return d
		}, "envFrom must take"},
		{"state volume claim missing", func(t *testing.T, d []doc) []doc {
			return drop(t, d, "PersistentVolumeClaim", "challfn-state")
		}, `PersistentVolumeClaim "challfn-state" is not part`},
		{"bad PingSource schedule", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "PingSource", "challfn-janitor"), "spec.schedule", "every minute")
			return d
		}, "schedule"},
		{"PingSource aimed at the instance function", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "PingSource", "challfn-janitor"), "spec.sink.ref.name", "challfn-instance")
			return d
		}, "no PingSource fires the janitor"},
		{"Broker without class", func(t *testing.T, d []doc) []doc {
			del(t, pick(t, d, "Broker", "default"), "metadata.annotations")
			return d
		}, "broker.class"},
		{"Trigger missing for an event type", func(t *testing.T, d []doc) []doc {
			return drop(t, d, "Trigger", "challfn-instance-delete")
		}, "no Trigger delivers events of type io.challfn.instance.delete"},
		{"Trigger to the wrong path", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "Trigger", "challfn-pool-fill"), "spec.subscriber.uri", "/")
			return d
		}, "subscriber path must be /events"},
		{"Trigger delivery timeout too short", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "Trigger", "challfn-instance-update"), "spec.delivery.timeout", "PT30S")
			return d
		}, "delivery.timeout 30s is shorter"},
		{"events sent to a missing Broker", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "ConfigMap", "challfn-config"), "data.EVENTS_SINK_URL", "http://broker-ingress.knative-eventing.svc.cluster.local/challfn/other")
			return d
		}, "not the ingress of any Broker"},
		{"passphrase in the ConfigMap", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "ConfigMap", "challfn-config"), "data.PULUMI_CONFIG_PASSPHRASE", "x")
			return d
		}, "belongs in the Secret"},
		{"instance route missing", func(t *testing.T, d []doc) []doc {
			r := pick(t, d, "HTTPRoute", "challfn-api")
			rules := get(t, r, "spec.rules").([]any)
			set(t, r, "spec.rules", append([]any{rules[0]}, rules[2:]...))
			return d
		}, "no HTTPRoute rule matches PathPrefix /api/v1/instance"},
		{"route to the wrong function", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "HTTPRoute", "challfn-api"), "spec.rules.1.filters.0.urlRewrite.hostname", "challfn-challenge.challfn.svc.cluster.local")
			return d
		}, "/api/v1/instance must go to challfn-instance"},
		{"REST routed to the janitor", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "HTTPRoute", "challfn-api"), "spec.rules.2.filters.0.urlRewrite.hostname", "challfn-janitor.challfn.svc.cluster.local")
			return d
		}, "REST requests routed to the CloudEvent function"},
		{"gRPC route missing", func(t *testing.T, d []doc) []doc {
			r := pick(t, d, "HTTPRoute", "challfn-api")
			rules := get(t, r, "spec.rules").([]any)
			set(t, r, "spec.rules", append(append([]any{}, rules[:2]...), rules[3:]...))
			return d
		}, "no HTTPRoute rule matches PathPrefix /api.v1.challenge.ChallengeStore"},
		{"gRPC to the wrong function", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "HTTPRoute", "challfn-api"), "spec.rules.3.filters.0.urlRewrite.hostname", "challfn-challenge.challfn.svc.cluster.local")
			return d
		}, "/api.v1.instance.InstanceManager must go to challfn-instance"},
		{"gRPC stream cut by the gateway", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "HTTPRoute", "challfn-api"), "spec.rules.2.timeouts.request", "15s")
			return d
		}, "/api.v1.challenge.ChallengeStore: timeouts.request 15s is shorter"},
		{"HTTP function port http1 (no gRPC through the queue-proxy)", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-instance"), ctr+"ports.0.name", "http1")
			return d
		}, "port must be named h2c"},
		{"janitor port h2c", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, ksvc, "challfn-janitor"), ctr+"ports.0.name", "h2c")
			return d
		}, "port named h2c on a CloudEvent function"},
		{"gateway timeout too short", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "HTTPRoute", "challfn-api"), "spec.rules.0.timeouts.request", "15s")
			return d
		}, "timeouts.request 15s is shorter"},
		{"cross-namespace backend without grant", func(t *testing.T, d []doc) []doc {
			return drop(t, d, "ReferenceGrant", "challfn-to-knative-ingress")
		}, "no ReferenceGrant allows it"},
		{"etcd with one member", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "StatefulSet", "etcd"), "spec.replicas", 1)
			return d
		}, "replicas 1, want 3"},
		{"etcd ordered start", func(t *testing.T, d []doc) []doc {
			del(t, pick(t, d, "StatefulSet", "etcd"), "spec.podManagementPolicy")
			return d
		}, "podManagementPolicy must be Parallel"},
		{"etcd endpoints outside the cluster", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "ConfigMap", "challfn-config"), "data.ETCD_ENDPOINTS", "http://etcd-3.etcd.challfn.svc.cluster.local:2379")
			return d
		}, "not a member of the etcd StatefulSet"},
		{"telemetry sent nowhere", func(t *testing.T, d []doc) []doc {
			set(t, pick(t, d, "ConfigMap", "challfn-config"), "data.OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.challfn-monitoring.svc.cluster.local:4319")
			return d
		}, "OTEL_EXPORTER_OTLP_ENDPOINT"},
		{"namespace missing", func(t *testing.T, d []doc) []doc {
			return drop(t, d, "Namespace", "challfn-scenarios")
		}, `namespace "challfn-scenarios" is not part`},
	}
	// The intact copy passes: each failure below comes from its mutation.
	if err := check("prod", joinDocs(t, parseDocs(t, rendered)), cc, DefaultPolicy()); err != nil {
		t.Fatalf("intact copy refused: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			docs := tc.mutate(t, parseDocs(t, rendered))
			err := check("broken", joinDocs(t, docs), cc, DefaultPolicy())
			if err == nil {
				t.Fatalf("broken copy accepted, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

// Broken kustomize trees (copies of knative/ on disk) are refused too.
func TestBrokenKustomizations(t *testing.T) {
	cases := []struct {
		name   string
		break_ func(t *testing.T, root string)
		want   string
	}{
		{"resource file missing", func(t *testing.T, root string) {
			if err := os.Remove(filepath.Join(root, "etcd", "etcd.yaml")); err != nil {
				t.Fatal(err)
			}
		}, "etcd.yaml"},
		{"YAML syntax error", func(t *testing.T, root string) {
			p := filepath.Join(root, "base", "eventing.yaml")
			b, _ := os.ReadFile(p)
			if err := os.WriteFile(p, append(b, []byte("\n  - : [\n")...), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "eventing.yaml"},
		{"patch on a missing path", func(t *testing.T, root string) {
			p := filepath.Join(root, "overlays", "prod", "kustomization.yaml")
			b, _ := os.ReadFile(p)
			b = []byte(strings.Replace(string(b), "autoscaling.knative.dev~1min-scale", "autoscaling.knative.dev~1min-scal/x", 1))
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "min-scal"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "knative")
			if err := os.CopyFS(root, os.DirFS(filepath.Join(repoRoot(t), "knative"))); err != nil {
				t.Fatal(err)
			}
			tc.break_(t, root)
			out, err := Render(filepath.Join(root, "overlays", "prod"))
			if err == nil {
				err = check("prod", out, clusterConfig(t), DefaultPolicy())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error mentioning %q, got %v", tc.want, err)
			}
		})
	}
}
