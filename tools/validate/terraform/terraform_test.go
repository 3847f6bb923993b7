package terraform

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func moduleDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "terraform", "versions.tf")); err == nil {
			return filepath.Join(dir, "terraform")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("terraform/ not found above the working directory")
		}
		dir = parent
	}
}

// checkDir is the whole offline check of a module directory.
func checkDir(dir string) error {
	m, err := Load(dir)
	if err != nil {
		return err
	}
	vars, err := LoadTFVars(filepath.Join(dir, "terraform.tfvars.example"))
	if err != nil {
		return err
	}
	return Check(m, DefaultPolicy(), vars)
}

func TestModuleIsValid(t *testing.T) {
	dir := moduleDir(t)
	if err := checkDir(dir); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d resources, %d variables, %d outputs", len(m.Resources), len(m.Variables), len(m.Outputs))
}

// terraformFmt runs `terraform fmt -check -recursive` when the binary exists.
func terraformFmt(t *testing.T, dir string) error {
	t.Helper()
	bin, err := exec.LookPath("terraform")
	if err != nil {
		t.Skip("terraform not on PATH")
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(context.Background(), bin, "fmt", "-check", "-recursive", "-no-color", dir)
	// No CLI configuration or plugin lookups: fmt needs none.
	cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE=/dev/null", "CHECKPOINT_DISABLE=1")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return errors.New(err.Error() + ": " + out.String())
	}
	return nil
}

func TestTerraformFmt(t *testing.T) {
	dir := moduleDir(t)
	if err := terraformFmt(t, dir); err != nil {
		t.Fatalf("terraform fmt -check: %v", err)
	}
	// The example tfvars is HCL too; fmt only looks at *.tfvars.
	tmp := t.TempDir()
	b, err := os.ReadFile(filepath.Join(dir, "terraform.tfvars.example"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "example.tfvars"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := terraformFmt(t, tmp); err != nil {
		t.Fatalf("terraform fmt -check terraform.tfvars.example: %v", err)
	}
}

// copyModule copies terraform/ to a temporary directory.
func copyModule(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "terraform")
	if err := os.CopyFS(dst, os.DirFS(moduleDir(t))); err != nil {
		t.Fatal(err)
	}
	return dst
}

// replace edits one file of the copy; the old text must be there once.
func replace(t *testing.T, dir, file, old, new string) {
	t.Helper()
	p := filepath.Join(dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), old); n != 1 {
		t.Fatalf("%s: %q found %d times, want 1", file, old, n)
	}
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrokenCopies feeds deliberately broken copies of the module through
// the check; each must be refused with the expected reason.
func TestBrokenCopies(t *testing.T) {
	cases := []struct {
		name, file, old, new, want string
	}{
		{"syntax error", "main.tf", "locals {", "locals {{", "parse"},
		{"request timeout too short", "variables.tf", "default     = 600\n", "default     = 300\n", "timeout 5m0s outside"},
		{"deploy timeout without margin", "variables.tf", "default     = 540\n", "default     = 590\n", "leaves less than 30s"},
		{"service without its service account", "main.tf", "    service_account                  = google_service_account.fn[each.key].email\n", "", "missing template.service_account"},
		{"default compute service account", "main.tf", "google_service_account.fn[each.key].email\n    timeout", "\"123-compute@developer.gserviceaccount.com\"\n    timeout", "dedicated google_service_account"},
		{"service scaling removed", "main.tf", "      max_instance_count = var.max_instances[each.key]\n", "", "missing template.scaling.max_instance_count"},
		{"open ingress", "main.tf", "ingress     = \"INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER\"\n      concurrency = 200", "ingress     = \"INGRESS_TRAFFIC_ALL\"\n      concurrency = 200", "INGRESS_TRAFFIC_ALL bypasses"},
		{"resource type typo", "events.tf", "resource \"google_pubsub_topic\" \"events\"", "resource \"google_pubsub_topik\" \"events\"", "not in the schema"},
		{"api_url output removed", "outputs.tf", "output \"api_url\"", "output \"base_url\"", `missing output "api_url"`},
		{"variable without description", "variables.tf", "  description = \"Comma-separated etcd client URLs (e.g. http://10.0.0.5:2379), reachable through the VPC egress below.\"\n", "", `variable "etcd_endpoints" has no description`},
		{"unconditional allUsers", "iam.tf", "  for_each = var.public_access ? local.rest_functions : toset([])\n", "  for_each = local.rest_functions\n", "grants access to everyone"},
		{"scheduler without CloudEvent type", "events.tf", "      \"ce-type\"        = \"io.challfn.janitor.run\"\n", "", "lacks ce-type"},
		{"scheduler without OIDC token", "events.tf", "    oidc_token {\n      service_account_email = google_service_account.invoker.email\n      audience              = google_cloud_run_v2_service.fn[\"janitor\"].uri\n    }\n", "", "missing http_target.oidc_token.service_account_email"},
		{"events pushed to the wrong path", "events.tf", "fn[\"instance\"].uri}/events\"", "fn[\"instance\"].uri}/\"", "must be the instance function's /events path"},
		{"ack deadline shorter than a deployment", "events.tf", "ack_deadline_seconds       = 600", "ack_deadline_seconds       = 60", "ack_deadline_seconds 60 is shorter"},
		{"instance paths not routed", "lb.tf", "\"/api/v1/instance\", \"/api/v1/instance/*\"", "\"/api/v1/instance\"", "does not route /api/v1/instance/*"},
		{"healthcheck to the wrong function", "lb.tf", "      paths   = [\"/api/v1/challenge\", \"/api/v1/challenge/*\", \"/healthcheck\"]\n", "      paths   = [\"/api/v1/challenge\", \"/api/v1/challenge/*\"]\n", "does not route /healthcheck"},
		{"gRPC not routed", "lb.tf", "      paths   = [\"/api.v1.instance.InstanceManager/*\"]\n", "      paths   = [\"/api.v1.instance.InstanceManger/*\"]\n", "does not route /api.v1.instance.InstanceManager/*"},
		{"gRPC to the wrong function", "lb.tf", "      paths   = [\"/api.v1.challenge.ChallengeStore/*\"]\n      service = google_compute_backend_service.api[\"challenge\"].id", "      paths   = [\"/api.v1.challenge.ChallengeStore/*\"]\n      service = google_compute_backend_service.api[\"instance\"].id", "routes /api.v1.challenge.ChallengeStore/* to"},
		{"HTTP/1.1 to the functions", "lb.tf", "  protocol = \"HTTP2\"", "  protocol = \"HTTPS\"", "gRPC needs HTTP2"},
		{"functions downgraded to HTTP/1.1", "main.tf", "name           = each.value.http ? \"h2c\" : \"http1\"", "name           = \"http1\"", "ports.name \"http1\", want \"h2c\""},
		{"janitor on h2c", "main.tf", "name           = each.value.http ? \"h2c\" : \"http1\"", "name           = \"h2c\"", "janitor: ports.name \"h2c\", want \"http1\""},
		{"janitor service missing", "main.tf", "    janitor = {\n      http        = false", "    janitorr = {\n      http        = false", `no Cloud Run service for the function "janitor"`},
		{"example misses a required variable", "terraform.tfvars.example", "passphrase_secret = \"challfn-pulumi-passphrase\"\n", "", `required variable "passphrase_secret" is not set`},
		{"example sets an unknown variable", "terraform.tfvars.example", "domain ", "domian ", `sets "domian", which is not a variable`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyModule(t)
			replace(t, dir, tc.file, tc.old, tc.new)
			err := checkDir(dir)
			if err == nil {
				t.Fatalf("broken copy accepted, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not say %q:\n%v", tc.want, err)
			}
		})
	}
}

func TestBrokenFormatting(t *testing.T) {
	dir := copyModule(t)
	replace(t, dir, "outputs.tf", "  description = \"Base URL", "description =   \"Base URL")
	if err := terraformFmt(t, dir); err == nil {
		t.Fatal("terraform fmt -check accepted a badly formatted file")
	}
}
