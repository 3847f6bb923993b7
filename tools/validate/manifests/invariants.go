package manifests

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	eventingv1 "knative.dev/eventing/pkg/apis/eventing/v1"
	sourcesv1 "knative.dev/eventing/pkg/apis/sources/v1"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// Route is one path of the REST API's single entry address.
type Route struct {
	Path    string
	Type    gatewayv1.PathMatchType
	Service string // Knative Service that must receive it
	// Long routes may run a deployment: their gateway timeout must cover the
	// function's timeoutSeconds.
	Long bool
	// GRPC routes carry gRPC calls: the gateway must speak HTTP/2 cleartext
	// to their backend (ClusterConfig.H2CBackends).
	GRPC bool
}

// Policy holds the project's deployment invariants.
type Policy struct {
	Namespace string
	// Functions maps each Knative Service to its signature label:
	// "http" or "cloudevent".
	Functions map[string]string
	ConfigMap string
	Secret    string
	// MaxTimeoutSeconds is Knative's default max-revision-timeout-seconds.
	MaxTimeoutSeconds int64
	// DeployMargin is the time a function needs, after DEPLOY_TIMEOUT, to
	// clean a failed deployment up and answer.
	DeployMargin time.Duration
	// EventTypes must each reach EventsService at EventsPath through a Trigger.
	EventTypes    []string
	EventsService string
	EventsPath    string
	// JanitorService must be the sink of a PingSource.
	JanitorService string
	Routes         []Route
	// EtcdReplicas, when non-zero, requires an etcd StatefulSet of that size.
	EtcdReplicas int32
}

// DefaultPolicy is the policy of challfn's manifests.
func DefaultPolicy() Policy {
	return Policy{
		Namespace: "challfn",
		Functions: map[string]string{
			"challfn-challenge": "http",
			"challfn-instance":  "http",
			"challfn-janitor":   "cloudevent",
		},
		ConfigMap:         "challfn-config",
		Secret:            "challfn-secrets",
		MaxTimeoutSeconds: 600,
		DeployMargin:      30 * time.Second,
		EventTypes:        []string{"io.challfn.pool.fill", "io.challfn.instance.update", "io.challfn.instance.delete"},
		EventsService:     "challfn-instance",
		EventsPath:        "/events",
		JanitorService:    "challfn-janitor",
		Routes: []Route{
			{Path: "/api/v1/challenge", Type: gatewayv1.PathMatchPathPrefix, Service: "challfn-challenge", Long: true},
			{Path: "/api/v1/instance", Type: gatewayv1.PathMatchPathPrefix, Service: "challfn-instance", Long: true},
			// gRPC paths are /<package>.<service>/<method>.
			{Path: "/api.v1.challenge.ChallengeStore", Type: gatewayv1.PathMatchPathPrefix, Service: "challfn-challenge", Long: true, GRPC: true},
			{Path: "/api.v1.instance.InstanceManager", Type: gatewayv1.PathMatchPathPrefix, Service: "challfn-instance", Long: true, GRPC: true},
			{Path: "/healthcheck", Type: gatewayv1.PathMatchExact},
		},
		EtcdReplicas: 3,
	}
}

const (
	labelVisibility = "networking.knative.dev/visibility"
	labelSignature  = "functions.challfn.io/signature"
)

type checker struct {
	p    Policy
	cc   ClusterConfig
	objs []Object
	errs []error
}

func (c *checker) errorf(o Object, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", o, fmt.Sprintf(format, args...)))
}

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

func (c *checker) find(kind, namespace, name string) (Object, bool) {
	for _, o := range c.objs {
		if o.Kind == kind && o.Name == name && (namespace == "" || o.Namespace == namespace) {
			return o, true
		}
	}
	return Object{}, false
}

// CheckInvariants checks the project's rules on a whole rendered deployment
// for a cluster configured as cc. Run it after ValidateKnative, which fills
// Knative's defaults in.
func CheckInvariants(objs []Object, p Policy, cc ClusterConfig) error {
	c := &checker{p: p, cc: cc, objs: objs}
	deploy := c.checkConfig()
	c.checkServices(deploy)
	c.checkEventing(deploy)
	c.checkRouting()
	c.checkEtcd()
	c.checkNamespaces()
	return errors.Join(c.errs...)
}

// checkConfig returns DEPLOY_TIMEOUT (0 when unusable, already reported).
func (c *checker) checkConfig() time.Duration {
	o, ok := c.find("v1/ConfigMap", c.p.Namespace, c.p.ConfigMap)
	if !ok {
		c.fail("missing ConfigMap %s/%s", c.p.Namespace, c.p.ConfigMap)
		return 0
	}
	data := o.Typed.(*corev1.ConfigMap).Data
	for _, k := range []string{"ETCD_ENDPOINTS", "PULUMI_BACKEND_URL", "SCENARIO_STORE_URL", "EVENTS_SINK_URL", "DEPLOY_TIMEOUT"} {
		if strings.TrimSpace(data[k]) == "" {
			c.errorf(o, "%s is required", k)
		}
	}
	if _, ok := data["PULUMI_CONFIG_PASSPHRASE"]; ok {
		c.errorf(o, "PULUMI_CONFIG_PASSPHRASE belongs in the Secret %s, not in a ConfigMap", c.p.Secret)
	}
	if _, ok := data["API_TOKENS"]; ok {
		c.errorf(o, "API_TOKENS belongs in the Secret %s, not in a ConfigMap", c.p.Secret)
	}
	c.checkEtcdEndpoints(o, data["ETCD_ENDPOINTS"])
	c.checkOTLPEndpoint(o, data["OTEL_EXPORTER_OTLP_ENDPOINT"])
	if sink := data["EVENTS_SINK_URL"]; sink != "" {
		found := false
		for _, b := range Find[*eventingv1.Broker](c.objs) {
			if sink == fmt.Sprintf("http://broker-ingress.knative-eventing.svc.cluster.local/%s/%s", b.Namespace, b.Name) {
				found = true
			}
		}
		if !found {
			c.errorf(o, "EVENTS_SINK_URL %q is not the ingress of any Broker of the deployment", sink)
		}
	}
	d, err := time.ParseDuration(data["DEPLOY_TIMEOUT"])
	if err != nil || d <= 0 {
		c.errorf(o, "DEPLOY_TIMEOUT %q is not a positive duration", data["DEPLOY_TIMEOUT"])
		return 0
	}
	return d
}

func (c *checker) checkServices(deploy time.Duration) {
	services := map[string]*servingv1.Service{}
	for _, o := range c.objs {
		if s, ok := o.Typed.(*servingv1.Service); ok {
			services[s.Name] = s
			c.checkService(o, s, deploy)
		}
	}
	for name := range c.p.Functions {
		if _, ok := services[name]; !ok {
			c.fail("missing Knative Service %s/%s", c.p.Namespace, name)
		}
	}
}

func (c *checker) checkService(o Object, s *servingv1.Service, deploy time.Duration) {
	if v := s.Labels[labelVisibility]; v != "cluster-local" {
		c.errorf(o, "label %s must be cluster-local (private by default), got %q", labelVisibility, v)
	}
	sig := s.Labels[labelSignature]
	if want, ok := c.p.Functions[s.Name]; ok && sig != want {
		c.errorf(o, "label %s must be %q, got %q", labelSignature, want, sig)
	} else if sig != "http" && sig != "cloudevent" {
		c.errorf(o, "label %s must be http or cloudevent, got %q", labelSignature, sig)
	}
	spec := s.Spec.Template.Spec
	switch {
	case spec.TimeoutSeconds == nil:
		c.errorf(o, "timeoutSeconds must be set")
	case *spec.TimeoutSeconds > c.p.MaxTimeoutSeconds:
		c.errorf(o, "timeoutSeconds %d exceeds Knative's default maximum %d", *spec.TimeoutSeconds, c.p.MaxTimeoutSeconds)
	case deploy > 0 && time.Duration(*spec.TimeoutSeconds)*time.Second < deploy+c.p.DeployMargin:
		c.errorf(o, "timeoutSeconds %d is shorter than DEPLOY_TIMEOUT %s + %s margin", *spec.TimeoutSeconds, deploy, c.p.DeployMargin)
	}
	if spec.ContainerConcurrency == nil || *spec.ContainerConcurrency <= 0 {
		c.errorf(o, "containerConcurrency must be set to a positive limit")
	}
	if sa := spec.ServiceAccountName; sa == "" || sa == "default" {
		c.errorf(o, "serviceAccountName must name a dedicated ServiceAccount")
	} else if _, ok := c.find("v1/ServiceAccount", s.Namespace, sa); !ok {
		c.errorf(o, "ServiceAccount %q is not part of the deployment", sa)
	}
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			if _, ok := c.find("v1/PersistentVolumeClaim", s.Namespace, v.PersistentVolumeClaim.ClaimName); !ok {
				c.errorf(o, "volume %s: PersistentVolumeClaim %q is not part of the deployment", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	for _, ct := range spec.Containers {
		if err := pinned(ct.Image); err != nil {
			c.errorf(o, "container %s: %v", ct.Name, err)
		} else if err := qualified(ct.Image); err != nil {
			c.errorf(o, "container %s: %v", ct.Name, err)
		}
		// HTTP functions also serve gRPC, which needs the queue-proxy to
		// forward HTTP/2 (port name h2c; REST works over it too); a
		// CloudEvent function is served by funcframework, HTTP/1.1 only.
		port := ""
		if len(ct.Ports) > 0 {
			port = ct.Ports[0].Name
		}
		switch {
		case sig == "http" && port != "h2c":
			c.errorf(o, "container %s: port must be named h2c (gRPC needs HTTP/2 from the queue-proxy), got %q", ct.Name, port)
		case sig == "cloudevent" && port == "h2c":
			c.errorf(o, "container %s: port named h2c on a CloudEvent function (funcframework speaks HTTP/1.1 only)", ct.Name)
		}
		if sig == "cloudevent" {
			for name, pr := range map[string]*corev1.Probe{"readiness": ct.ReadinessProbe, "liveness": ct.LivenessProbe, "startup": ct.StartupProbe} {
				if pr != nil && pr.HTTPGet != nil {
					c.errorf(o, "container %s: HTTP %s probe on a CloudEvent function (it answers 400 to a plain GET)", ct.Name, name)
				}
			}
		}
		var cm, sec bool
		for _, ef := range ct.EnvFrom {
			cm = cm || (ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == c.p.ConfigMap)
			sec = sec || (ef.SecretRef != nil && ef.SecretRef.Name == c.p.Secret)
		}
		if !cm || !sec {
			c.errorf(o, "container %s: envFrom must take ConfigMap %s and Secret %s", ct.Name, c.p.ConfigMap, c.p.Secret)
		}
		if sc := ct.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			c.errorf(o, "container %s: securityContext.runAsNonRoot must be true", ct.Name)
		}
	}
}

// pinned refuses images that may change under a running deployment.
func pinned(image string) error {
	if image == "" {
		return errors.New("no image")
	}
	if strings.Contains(image, "@sha256:") {
		return nil
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon < slash+1 {
		return fmt.Errorf("image %q has neither tag nor digest", image)
	}
	if tag := image[colon+1:]; tag == "latest" {
		return fmt.Errorf("image %q uses the tag latest", image)
	}
	return nil
}

// qualified refuses our images without a registry host: an unreplaced
// placeholder would silently resolve to Docker Hub.
func qualified(image string) error {
	first, _, ok := strings.Cut(image, "/")
	if !ok || !strings.ContainsAny(first, ".:") && first != "localhost" {
		return fmt.Errorf("image %q is not qualified with a registry host", image)
	}
	return nil
}

func (c *checker) checkEventing(deploy time.Duration) {
	triggers := Find[*eventingv1.Trigger](c.objs)
	for _, typ := range c.p.EventTypes {
		found := false
		for _, t := range triggers {
			if t.Spec.Filter == nil || t.Spec.Filter.Attributes["type"] != typ {
				continue
			}
			found = true
			o, _ := c.find("eventing.knative.dev/v1/Trigger", t.Namespace, t.Name)
			if _, ok := c.find("eventing.knative.dev/v1/Broker", t.Namespace, t.Spec.Broker); !ok {
				c.errorf(o, "broker %q is not part of the deployment", t.Spec.Broker)
			}
			sub := t.Spec.Subscriber
			if sub.Ref == nil || sub.Ref.Kind != "Service" || sub.Ref.APIVersion != "serving.knative.dev/v1" || sub.Ref.Name != c.p.EventsService {
				c.errorf(o, "subscriber must be the Knative Service %s", c.p.EventsService)
			}
			if sub.URI == nil || sub.URI.Path != c.p.EventsPath {
				c.errorf(o, "subscriber path must be %s", c.p.EventsPath)
			}
			if d := t.Spec.Delivery; d == nil || d.Timeout == nil {
				c.errorf(o, "delivery.timeout must be set (an event may run a deployment)")
			} else if dt, err := isoDuration(*d.Timeout); err != nil {
				c.errorf(o, "delivery.timeout: %v", err)
			} else if deploy > 0 && dt < deploy {
				c.errorf(o, "delivery.timeout %s is shorter than DEPLOY_TIMEOUT %s", dt, deploy)
			}
		}
		if !found {
			c.fail("no Trigger delivers events of type %s", typ)
		}
	}
	found := false
	for _, ps := range Find[*sourcesv1.PingSource](c.objs) {
		if r := ps.Spec.Sink.Ref; r != nil && r.Kind == "Service" && r.APIVersion == "serving.knative.dev/v1" && r.Name == c.p.JanitorService {
			found = true
		}
	}
	if !found {
		c.fail("no PingSource fires the janitor Service %s", c.p.JanitorService)
	}
}

var isoRE = regexp.MustCompile(`^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$`)

// isoDuration parses the ISO 8601 durations Knative uses (PT...H...M...S).
func isoDuration(s string) (time.Duration, error) {
	m := isoRE.FindStringSubmatch(s)
	if m == nil || s == "PT" {
		return 0, fmt.Errorf("%q is not an ISO 8601 duration of the form PTnHnMnS", s)
	}
	var d time.Duration
	for i, unit := range []time.Duration{time.Hour, time.Minute, time.Second} {
		if m[i+1] != "" {
			n, _ := strconv.Atoi(m[i+1])
			d += time.Duration(n) * unit
		}
	}
	return d, nil
}

func (c *checker) checkRouting() {
	routes := Find[*gatewayv1.HTTPRoute](c.objs)
	if len(routes) == 0 {
		c.fail("no HTTPRoute gives the REST API its entry address")
		return
	}
	for _, r := range routes {
		o, _ := c.find("gateway.networking.k8s.io/v1/HTTPRoute", r.Namespace, r.Name)
		for _, pr := range r.Spec.ParentRefs {
			ns := r.Namespace
			if pr.Namespace != nil {
				ns = string(*pr.Namespace)
			}
			if _, ok := c.find("gateway.networking.k8s.io/v1/Gateway", ns, string(pr.Name)); !ok {
				c.errorf(o, "parent Gateway %s/%s is not part of the deployment", ns, pr.Name)
			}
		}
		for _, rule := range r.Spec.Rules {
			c.checkRule(o, r, rule)
		}
	}
	for _, want := range c.p.Routes {
		found := false
		for _, r := range routes {
			for _, rule := range r.Spec.Rules {
				for _, m := range rule.Matches {
					if m.Path != nil && m.Path.Value != nil && *m.Path.Value == want.Path && m.Path.Type != nil && *m.Path.Type == want.Type {
						found = true
						o, _ := c.find("gateway.networking.k8s.io/v1/HTTPRoute", r.Namespace, r.Name)
						c.checkRouteTarget(o, want, rule)
					}
				}
			}
		}
		if !found {
			c.fail("no HTTPRoute rule matches %s %s", want.Type, want.Path)
		}
	}
}

// checkRule checks what every rule needs: a backend the route may use and a
// Host rewrite naming a cluster-local HTTP function.
func (c *checker) checkRule(o Object, r *gatewayv1.HTTPRoute, rule gatewayv1.HTTPRouteRule) {
	if len(rule.BackendRefs) == 0 {
		c.errorf(o, "a rule has no backendRefs")
	}
	for _, br := range rule.BackendRefs {
		if br.Namespace == nil || string(*br.Namespace) == r.Namespace {
			continue
		}
		if !c.granted(r.Namespace, string(*br.Namespace), string(br.Name)) {
			c.errorf(o, "backend %s/%s is in another namespace and no ReferenceGrant allows it", *br.Namespace, br.Name)
		}
	}
	host := rewriteHost(rule)
	if host == "" {
		c.errorf(o, "a rule has no URLRewrite hostname: Knative's ingress would not know which function to call")
		return
	}
	svc, ok := c.functionOfHost(host)
	if !ok {
		c.errorf(o, "URLRewrite hostname %q is not a cluster-local Knative Service of the deployment", host)
		return
	}
	if c.p.Functions[svc] == "cloudevent" {
		c.errorf(o, "REST requests routed to the CloudEvent function %s", svc)
	}
}

func (c *checker) checkRouteTarget(o Object, want Route, rule gatewayv1.HTTPRouteRule) {
	svc, _ := c.functionOfHost(rewriteHost(rule))
	if want.Service != "" && svc != want.Service {
		c.errorf(o, "%s must go to %s, goes to %q", want.Path, want.Service, svc)
	}
	if want.GRPC {
		for _, br := range rule.BackendRefs {
			ns := o.Namespace
			if br.Namespace != nil {
				ns = string(*br.Namespace)
			}
			port := 0
			if br.Port != nil {
				port = int(*br.Port)
			}
			if key := fmt.Sprintf("%s/%s:%d", ns, br.Name, port); !slices.Contains(c.cc.H2CBackends, key) {
				c.errorf(o, "%s carries gRPC, but the gateway speaks HTTP/1.1 to its backend %s: give that Service port appProtocol kubernetes.io/h2c (knative/cluster/kourier-internal-h2c-patch.yaml)", want.Path, key)
			}
		}
	}
	if !want.Long {
		return
	}
	if rule.Timeouts == nil || rule.Timeouts.Request == nil {
		c.errorf(o, "%s: timeouts.request must be set (gateways default to seconds; a deployment takes minutes)", want.Path)
		return
	}
	d, err := time.ParseDuration(string(*rule.Timeouts.Request))
	if err != nil {
		c.errorf(o, "%s: timeouts.request: %v", want.Path, err)
		return
	}
	if d != 0 && d < time.Duration(c.p.MaxTimeoutSeconds)*time.Second {
		c.errorf(o, "%s: timeouts.request %s is shorter than the functions' timeoutSeconds %d", want.Path, d, c.p.MaxTimeoutSeconds)
	}
}

func rewriteHost(rule gatewayv1.HTTPRouteRule) string {
	for _, f := range rule.Filters {
		if f.Type == gatewayv1.HTTPRouteFilterURLRewrite && f.URLRewrite != nil && f.URLRewrite.Hostname != nil {
			return string(*f.URLRewrite.Hostname)
		}
	}
	return ""
}

// functionOfHost maps a cluster-local host (name.ns.svc.cluster.local) to a
// Knative Service of the deployment.
func (c *checker) functionOfHost(host string) (string, bool) {
	for _, s := range Find[*servingv1.Service](c.objs) {
		if host == s.Name+"."+s.Namespace+".svc.cluster.local" {
			return s.Name, true
		}
	}
	return "", false
}

func (c *checker) granted(fromNS, toNS, name string) bool {
	for _, g := range Find[*gatewayv1beta1.ReferenceGrant](c.objs) {
		if g.Namespace != toNS {
			continue
		}
		var from, to bool
		for _, f := range g.Spec.From {
			from = from || (f.Kind == "HTTPRoute" && string(f.Namespace) == fromNS)
		}
		for _, t := range g.Spec.To {
			to = to || (t.Kind == "Service" && t.Group == "" && (t.Name == nil || string(*t.Name) == name))
		}
		if from && to {
			return true
		}
	}
	return false
}

func (c *checker) etcd() (Object, *appsv1.StatefulSet, bool) {
	for _, o := range c.objs {
		if s, ok := o.Typed.(*appsv1.StatefulSet); ok && s.Spec.Template.Labels["app.kubernetes.io/name"] == "etcd" {
			return o, s, true
		}
	}
	return Object{}, nil, false
}

func (c *checker) checkEtcd() {
	o, s, ok := c.etcd()
	if !ok {
		if c.p.EtcdReplicas > 0 {
			c.fail("no etcd StatefulSet (label app.kubernetes.io/name=etcd)")
		}
		return
	}
	replicas := int32(1)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	if c.p.EtcdReplicas > 0 && replicas != c.p.EtcdReplicas {
		c.errorf(o, "replicas %d, want %d members", replicas, c.p.EtcdReplicas)
	}
	if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		c.errorf(o, "podManagementPolicy must be Parallel: members must start together to form the cluster")
	}
	if hs, ok := c.find("v1/Service", s.Namespace, s.Spec.ServiceName); !ok {
		c.errorf(o, "serviceName %q is not part of the deployment", s.Spec.ServiceName)
	} else if svc := hs.Typed.(*corev1.Service); svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		c.errorf(hs, "the etcd peer Service must be headless and publish not-ready addresses")
	}
	var cluster string
	for _, ct := range s.Spec.Template.Spec.Containers {
		for _, a := range append(append([]string{}, ct.Command...), ct.Args...) {
			if v, ok := strings.CutPrefix(a, "--initial-cluster="); ok {
				cluster = v
			}
		}
	}
	var names []string
	for _, m := range strings.Split(cluster, ",") {
		if n, _, ok := strings.Cut(m, "="); ok {
			names = append(names, n)
		}
	}
	var want []string
	for i := range replicas {
		want = append(want, fmt.Sprintf("%s-%d", s.Name, i))
	}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		c.errorf(o, "--initial-cluster members %v do not match the pods %v", names, want)
	}
}

func (c *checker) checkEtcdEndpoints(cm Object, endpoints string) {
	_, s, ok := c.etcd()
	if !ok || endpoints == "" {
		return
	}
	replicas := int32(1)
	if s.Spec.Replicas != nil {
		replicas = *s.Spec.Replicas
	}
	for _, ep := range strings.Split(endpoints, ",") {
		u, err := url.Parse(strings.TrimSpace(ep))
		if err != nil || u.Hostname() == "" {
			c.errorf(cm, "ETCD_ENDPOINTS entry %q is not a URL", ep)
			continue
		}
		ok := false
		for i := range replicas {
			ok = ok || u.Hostname() == fmt.Sprintf("%s-%d.%s.%s.svc.cluster.local", s.Name, i, s.Spec.ServiceName, s.Namespace)
		}
		if !ok {
			c.errorf(cm, "ETCD_ENDPOINTS entry %q is not a member of the etcd StatefulSet", ep)
		}
	}
}

func (c *checker) checkNamespaces() {
	for _, o := range c.objs {
		if o.Namespace == "" || !strings.HasPrefix(o.Namespace, c.p.Namespace) {
			continue
		}
		if _, ok := c.find("v1/Namespace", "", o.Namespace); !ok {
			c.errorf(o, "namespace %q is not part of the deployment", o.Namespace)
		}
	}
}

// checkOTLPEndpoint: when the collector is part of the deployment, the
// functions must export to one of its Service ports.
func (c *checker) checkOTLPEndpoint(cm Object, endpoint string) {
	if endpoint == "" {
		return
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		c.errorf(cm, "OTEL_EXPORTER_OTLP_ENDPOINT %q is not a URL", endpoint)
		return
	}
	name, rest, _ := strings.Cut(u.Hostname(), ".")
	ns, _, _ := strings.Cut(rest, ".")
	o, ok := c.find("v1/Service", ns, name)
	if !ok {
		if strings.HasSuffix(u.Hostname(), ".svc.cluster.local") {
			c.errorf(cm, "OTEL_EXPORTER_OTLP_ENDPOINT %q names no Service of the deployment", endpoint)
		}
		return
	}
	for _, p := range o.Typed.(*corev1.Service).Spec.Ports {
		if strconv.Itoa(int(p.Port)) == u.Port() {
			return
		}
	}
	c.errorf(cm, "OTEL_EXPORTER_OTLP_ENDPOINT %q: Service %s/%s has no port %s", endpoint, ns, name, u.Port())
}
