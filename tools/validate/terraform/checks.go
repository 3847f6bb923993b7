package terraform

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// Schema lists, per resource type, the attributes and blocks (dotted paths
// through nested and dynamic blocks) every resource of that type must have.
// A resource type missing from it is an error: typos must not pass.
var Schema = map[string][]string{
	"google_cloud_run_v2_service": {
		"name", "location", "ingress", "deletion_protection",
		"template.service_account", "template.timeout", "template.max_instance_request_concurrency",
		"template.scaling.min_instance_count", "template.scaling.max_instance_count",
		"template.containers.image", "template.containers.ports.name", "template.containers.ports.container_port",
		"template.containers.resources.limits", "template.containers.startup_probe",
	},
	"google_storage_bucket":                        {"name", "location", "uniform_bucket_level_access", "public_access_prevention", "versioning.enabled"},
	"google_pubsub_topic":                          {"name"},
	"google_pubsub_subscription":                   {"name", "topic", "ack_deadline_seconds", "push_config.push_endpoint", "push_config.oidc_token.service_account_email", "push_config.oidc_token.audience", "retry_policy"},
	"google_cloud_scheduler_job":                   {"name", "region", "schedule", "time_zone", "attempt_deadline", "http_target.uri", "http_target.http_method", "http_target.headers", "http_target.body", "http_target.oidc_token.service_account_email", "http_target.oidc_token.audience"},
	"google_service_account":                       {"account_id"},
	"google_cloud_run_v2_service_iam_member":       {"name", "location", "role", "member"},
	"google_storage_bucket_iam_member":             {"bucket", "role", "member"},
	"google_secret_manager_secret_iam_member":      {"secret_id", "role", "member"},
	"google_pubsub_topic_iam_member":               {"topic", "role", "member"},
	"google_project_iam_member":                    {"project", "role", "member"},
	"google_service_account_iam_member":            {"service_account_id", "role", "member"},
	"google_project_service":                       {"service"},
	"google_compute_global_address":                {"name"},
	"google_compute_region_network_endpoint_group": {"name", "region", "network_endpoint_type", "cloud_run.service"},
	"google_compute_backend_service":               {"name", "load_balancing_scheme", "protocol", "backend.group"},
	"google_compute_url_map":                       {"name", "default_service", "host_rule.hosts", "host_rule.path_matcher", "path_matcher.name", "path_matcher.default_service", "path_matcher.path_rule.paths", "path_matcher.path_rule.service"},
	"google_compute_managed_ssl_certificate":       {"name", "managed.domains"},
	"google_compute_target_https_proxy":            {"name", "url_map", "ssl_certificates"},
	"google_compute_target_http_proxy":             {"name", "url_map"},
	"google_compute_global_forwarding_rule":        {"name", "target", "port_range", "ip_address", "load_balancing_scheme"},
	"google_compute_security_policy":               {"name", "rule.action", "rule.priority", "rule.match"},
}

// Policy holds the deployment invariants of the Cloud Run module.
type Policy struct {
	Functions         []string // for_each keys of the Cloud Run services
	MinRequestTimeout time.Duration
	MaxRequestTimeout time.Duration
	DeployMargin      time.Duration
	// Paths of the URL map and the function each must reach.
	Paths         map[string]string
	EventsPath    string
	EventsService string
	Janitor       string
	// CE attributes Cloud Scheduler must send for the janitor to accept its call.
	SchedulerHeaders []string
	Outputs          []string
	// The only variable that may open the API to allUsers.
	PublicSwitch string
}

// DefaultPolicy is the policy of challfn's Terraform module.
func DefaultPolicy() Policy {
	return Policy{
		Functions:         []string{"challenge", "instance", "janitor"},
		MinRequestTimeout: 600 * time.Second,
		MaxRequestTimeout: 3600 * time.Second,
		DeployMargin:      30 * time.Second,
		Paths: map[string]string{
			"/api/v1/challenge":   "challenge",
			"/api/v1/challenge/*": "challenge",
			"/healthcheck":        "challenge",
			"/api/v1/instance":    "instance",
			"/api/v1/instance/*":  "instance",
			// gRPC: /<package>.<service>/<method>.
			"/api.v1.challenge.ChallengeStore/*": "challenge",
			"/api.v1.instance.InstanceManager/*": "instance",
		},
		EventsPath:       "/events",
		EventsService:    "instance",
		Janitor:          "janitor",
		SchedulerHeaders: []string{"ce-specversion", "ce-type", "ce-source", "ce-id"},
		Outputs:          []string{"api_url"},
		PublicSwitch:     "var.public_access",
	}
}

type checker struct {
	m    *Module
	p    Policy
	ctx  *hcl.EvalContext
	errs []error
}

func (c *checker) errorf(r Resource, format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf("%s: %s", r, fmt.Sprintf(format, args...)))
}

func (c *checker) fail(format string, args ...any) {
	c.errs = append(c.errs, fmt.Errorf(format, args...))
}

// Check runs the mini schema and the invariants; vars are the values of
// an example .tfvars (required variables have no default).
func Check(m *Module, p Policy, vars map[string]cty.Value) error {
	c := &checker{m: m, p: p, ctx: m.EvalContext(vars)}
	c.checkSchema()
	c.checkVariables(vars)
	c.checkOutputs()
	c.checkRun()
	c.checkPublic()
	c.checkEvents()
	c.checkBackends()
	c.checkURLMap()
	return errors.Join(c.errs...)
}

func (c *checker) checkSchema() {
	for _, r := range c.m.Resources {
		req, ok := Schema[r.Type]
		if !ok {
			c.errorf(r, "resource type not in the schema (typo, or add it to tools/validate/terraform/checks.go)")
			continue
		}
		for _, path := range req {
			attrs, blocks := Find(r.Body, path)
			if len(attrs) == 0 && len(blocks) == 0 {
				c.errorf(r, "missing %s", path)
			}
		}
	}
}

func (c *checker) checkVariables(vars map[string]cty.Value) {
	for name, body := range c.m.Variables {
		d, ok := body.Attributes["description"]
		if !ok {
			c.fail("variable %q has no description", name)
		} else if v, diags := d.Expr.Value(nil); diags.HasErrors() || v.Type() != cty.String || strings.TrimSpace(v.AsString()) == "" {
			c.fail("variable %q has an empty description", name)
		}
		if _, ok := body.Attributes["type"]; !ok {
			c.fail("variable %q has no type", name)
		}
		if _, ok := body.Attributes["default"]; !ok && vars != nil {
			if _, set := vars[name]; !set {
				c.fail("required variable %q is not set by the example tfvars", name)
			}
		}
	}
	for name := range vars {
		if _, ok := c.m.Variables[name]; !ok {
			c.fail("the example tfvars sets %q, which is not a variable", name)
		}
	}
	deploy, derr := c.number("var.deploy_timeout_seconds")
	request, rerr := c.number("var.request_timeout_seconds")
	if derr == nil && rerr == nil && time.Duration(deploy)*time.Second+c.p.DeployMargin > time.Duration(request)*time.Second {
		c.fail("deploy_timeout_seconds %d leaves less than %s before request_timeout_seconds %d", deploy, c.p.DeployMargin, request)
	}
}

func (c *checker) number(expr string) (int64, error) {
	e, diags := hclsyntax.ParseExpression([]byte(expr), "expr", hcl.InitialPos)
	if diags.HasErrors() {
		return 0, diags
	}
	v, diags := e.Value(c.ctx)
	if diags.HasErrors() {
		return 0, diags
	}
	if v.Type() != cty.Number {
		return 0, fmt.Errorf("%s is not a number", expr)
	}
	n, _ := v.AsBigFloat().Int64()
	return n, nil
}

func (c *checker) checkOutputs() {
	for name, body := range c.m.Outputs {
		if _, ok := body.Attributes["description"]; !ok {
			c.fail("output %q has no description", name)
		}
		if _, ok := body.Attributes["value"]; !ok {
			c.fail("output %q has no value", name)
		}
	}
	for _, name := range c.p.Outputs {
		if _, ok := c.m.Outputs[name]; !ok {
			c.fail("missing output %q", name)
		}
	}
}

// eval evaluates one attribute in an instance context.
func eval(body *hclsyntax.Body, path string, ctx *hcl.EvalContext) (cty.Value, error) {
	attrs, _ := Find(body, path)
	if len(attrs) == 0 {
		return cty.NilVal, fmt.Errorf("no %s", path)
	}
	v, diags := attrs[0].Expr.Value(ctx)
	if diags.HasErrors() {
		return cty.NilVal, fmt.Errorf("%s: %w", path, diags)
	}
	if !v.IsWhollyKnown() || v.IsNull() {
		return cty.NilVal, fmt.Errorf("%s: not known before apply", path)
	}
	return v, nil
}

func (c *checker) byType(typ string) []Resource {
	var out []Resource
	for _, r := range c.m.Resources {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

func (c *checker) checkRun() {
	var keys []string
	for _, r := range c.byType("google_cloud_run_v2_service") {
		for _, ictx := range r.Instances(c.ctx) {
			if each, ok := ictx.Variables["each"]; ok {
				keys = append(keys, each.GetAttr("key").AsString())
			}
			v, err := eval(r.Body, "template.timeout", ictx)
			if err != nil {
				c.errorf(r, "timeout must be computable from variables: %v", err)
			} else if d, err := time.ParseDuration(v.AsString()); err != nil {
				c.errorf(r, "timeout %q: %v", v.AsString(), err)
			} else if d < c.p.MinRequestTimeout || d > c.p.MaxRequestTimeout {
				c.errorf(r, "timeout %s outside %s..%s (a deployment must fit in one request)", d, c.p.MinRequestTimeout, c.p.MaxRequestTimeout)
			}
			// Functions behind the load balancer serve gRPC too: end-to-end
			// HTTP/2 (port name h2c). The janitor is funcframework's HTTP/1.1.
			if v, err := eval(r.Body, "template.containers.ports.name", ictx); err != nil {
				c.errorf(r, "ports.name must be computable from variables: %v", err)
			} else if each, ok := ictx.Variables["each"]; ok {
				want := "h2c"
				if each.GetAttr("key").AsString() == c.p.Janitor {
					want = "http1"
				}
				if v.AsString() != want {
					c.errorf(r, "%s: ports.name %q, want %q", each.GetAttr("key").AsString(), v.AsString(), want)
				}
			}
			if v, err := eval(r.Body, "ingress", ictx); err != nil {
				c.errorf(r, "ingress must be computable from variables: %v", err)
			} else if v.AsString() == "INGRESS_TRAFFIC_ALL" {
				c.errorf(r, "ingress INGRESS_TRAFFIC_ALL bypasses the load balancer (and its policy)")
			}
		}
		for _, a := range attrsOf(r.Body, "template.service_account") {
			if s := c.m.source(r.File, a.Expr); !strings.Contains(s, "google_service_account.") {
				c.errorf(r, "template.service_account must be a dedicated google_service_account, got %s", s)
			}
		}
	}
	for _, f := range c.p.Functions {
		if !slices.Contains(keys, f) {
			c.fail("no Cloud Run service for the function %q", f)
		}
	}
}

func attrsOf(body *hclsyntax.Body, path string) []*hclsyntax.Attribute {
	a, _ := Find(body, path)
	return a
}

// checkPublic: allUsers only behind the public switch variable.
func (c *checker) checkPublic() {
	for _, r := range c.m.Resources {
		for _, name := range []string{"member", "members"} {
			for _, a := range attrsOf(r.Body, name) {
				if !strings.Contains(c.m.source(r.File, a.Expr), "allUsers") && !strings.Contains(c.m.source(r.File, a.Expr), "allAuthenticatedUsers") {
					continue
				}
				guarded := false
				for _, g := range []string{"count", "for_each"} {
					if ga, ok := r.Body.Attributes[g]; ok && strings.Contains(c.m.source(r.File, ga.Expr), c.p.PublicSwitch) {
						guarded = true
					}
				}
				if !guarded {
					c.errorf(r, "grants access to everyone without depending on %s (private by default)", c.p.PublicSwitch)
				}
			}
		}
	}
}

func (c *checker) checkEvents() {
	subs := c.byType("google_pubsub_subscription")
	pushed := false
	for _, r := range subs {
		for _, a := range attrsOf(r.Body, "push_config.push_endpoint") {
			s := c.m.source(r.File, a.Expr)
			if strings.Contains(s, fmt.Sprintf("[%q]", c.p.EventsService)) && strings.HasSuffix(s, c.p.EventsPath+`"`) {
				pushed = true
			} else {
				c.errorf(r, "push_endpoint %s must be the %s function's %s path", s, c.p.EventsService, c.p.EventsPath)
			}
		}
		if v, err := eval(r.Body, "ack_deadline_seconds", c.ctx); err == nil {
			n, _ := v.AsBigFloat().Int64()
			if d, err := c.number("var.deploy_timeout_seconds"); err == nil && n < d {
				c.errorf(r, "ack_deadline_seconds %d is shorter than a deployment (%ds): Pub/Sub would redeliver events still being handled", n, d)
			}
		}
	}
	if !pushed {
		c.fail("no Pub/Sub subscription pushes events to the %s function", c.p.EventsService)
	}
	jobs := c.byType("google_cloud_scheduler_job")
	if len(jobs) == 0 {
		c.fail("no Cloud Scheduler job fires the janitor")
	}
	for _, r := range jobs {
		for _, a := range attrsOf(r.Body, "http_target.uri") {
			if s := c.m.source(r.File, a.Expr); !strings.Contains(s, fmt.Sprintf("[%q]", c.p.Janitor)) {
				c.errorf(r, "http_target.uri %s is not the janitor's", s)
			}
		}
		v, err := eval(r.Body, "http_target.headers", c.ctx)
		if err != nil {
			c.errorf(r, "http_target.headers must be computable: %v", err)
			continue
		}
		if !v.CanIterateElements() {
			c.errorf(r, "http_target.headers is not a map")
			continue
		}
		headers := map[string]bool{}
		for it := v.ElementIterator(); it.Next(); {
			k, _ := it.Element()
			headers[strings.ToLower(k.AsString())] = true
		}
		for _, h := range c.p.SchedulerHeaders {
			if !headers[h] {
				c.errorf(r, "http_target.headers lacks %s: the janitor (a CloudEvent function) would answer 400", h)
			}
		}
	}
}

// checkBackends: the load balancer speaks HTTP/2 to the functions, or gRPC
// calls would be downgraded to HTTP/1.1 on the way.
func (c *checker) checkBackends() {
	for _, r := range c.byType("google_compute_backend_service") {
		v, err := eval(r.Body, "protocol", c.ctx)
		if err != nil {
			c.errorf(r, "protocol must be computable: %v", err)
		} else if v.AsString() != "HTTP2" {
			c.errorf(r, "protocol %q: gRPC needs HTTP2 to the functions", v.AsString())
		}
	}
}

func (c *checker) checkURLMap() {
	maps := c.byType("google_compute_url_map")
	if len(maps) == 0 {
		c.fail("no URL map gives the REST API one base URL")
		return
	}
	routed := map[string]string{}
	for _, r := range maps {
		_, rules := Find(r.Body, "path_matcher.path_rule")
		for _, rule := range rules {
			pa, ok := rule.Attributes["paths"]
			sa, ok2 := rule.Attributes["service"]
			if !ok || !ok2 {
				continue
			}
			v, diags := pa.Expr.Value(c.ctx)
			if diags.HasErrors() || !v.CanIterateElements() {
				c.errorf(r, "path_rule.paths must be a literal list")
				continue
			}
			svc := c.m.source(r.File, sa.Expr)
			for it := v.ElementIterator(); it.Next(); {
				_, p := it.Element()
				routed[p.AsString()] = svc
			}
		}
	}
	for path, fn := range c.p.Paths {
		svc, ok := routed[path]
		if !ok {
			c.fail("the URL map does not route %s", path)
		} else if !strings.Contains(svc, fmt.Sprintf("[%q]", fn)) {
			c.fail("the URL map routes %s to %s, want the %s function", path, svc, fn)
		}
	}
}
