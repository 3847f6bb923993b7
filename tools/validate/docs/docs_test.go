// Package docs checks that the deployment guides (docs/deploy-*.md, pasted
// into the README) stay consistent with the manifests, the Terraform module
// and the Dockerfile they describe.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"challfn.local/tools/validate/manifests"
	"challfn.local/tools/validate/terraform"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "docs", "deploy-knative.md")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("docs/deploy-knative.md not found above the working directory")
		}
		dir = parent
	}
}

func read(t *testing.T, root, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A repository path starts a word (not inside a URL).
var pathRE = regexp.MustCompile("(?m)(?:^|[\\s`(=])((?:knative|terraform|scripts|deploy|docs)/[A-Za-z0-9_./-]*[A-Za-z0-9_-])")

// Every repository path a guide names exists.
func TestPathsExist(t *testing.T) {
	root := repoRoot(t)
	for _, doc := range []string{"docs/deploy-knative.md", "docs/deploy-cloudrun.md"} {
		found := pathRE.FindAllStringSubmatch(read(t, root, doc), -1)
		if len(found) < 3 {
			t.Errorf("%s names %d repository paths; the path check is not working", doc, len(found))
		}
		for _, m := range found {
			p := m[1]
			if strings.HasPrefix(p, "knative/monitoring") {
				continue // written by the observability work; may not exist yet
			}
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("%s names %s, which does not exist", doc, p)
			}
		}
	}
}

func TestKnativeGuideMatchesManifests(t *testing.T) {
	root := repoRoot(t)
	doc := read(t, root, "docs/deploy-knative.md")
	p := manifests.DefaultPolicy()
	for _, want := range []string{
		"create secret generic " + p.Secret,
		"-n " + p.Namespace,
		"--from-literal=PULUMI_CONFIG_PASSPHRASE=",
		"gateway/challfn",
		"owning-gateway-name=challfn",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("docs/deploy-knative.md lacks %q", want)
		}
	}
	// The images the guide builds and loads are the dev overlay's.
	out, err := manifests.Render(filepath.Join(root, "knative", "overlays", "dev"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--registry (\S+) --tag (\S+)`).FindStringSubmatch(doc)
	if m == nil {
		t.Fatal("docs/deploy-knative.md: no build-images.sh --registry R --tag T for the dev cluster")
	}
	for _, fn := range []string{"challenge", "instance", "janitor"} {
		img := m[1] + "/challfn-" + fn + ":" + m[2]
		if !strings.Contains(string(out), "image: "+img) {
			t.Errorf("the guide builds %s, which the dev overlay does not use", img)
		}
	}
}

func TestCloudRunGuideMatchesTerraform(t *testing.T) {
	root := repoRoot(t)
	doc := read(t, root, "docs/deploy-cloudrun.md")
	mod, err := terraform.Load(filepath.Join(root, "terraform"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`terraform output -raw (\w+)`).FindAllStringSubmatch(doc, -1) {
		if _, ok := mod.Outputs[m[1]]; !ok {
			t.Errorf("the guide reads output %q, which the module does not have", m[1])
		}
	}
	// Variables the guide tells the reader to set.
	for _, m := range regexp.MustCompile("`([a-z_]+) = ").FindAllStringSubmatch(doc, -1) {
		if _, ok := mod.Variables[m[1]]; !ok {
			t.Errorf("the guide sets variable %q, which the module does not have", m[1])
		}
	}
	edits := regexp.MustCompile(`# edit: ([^\n]+(?:\n# [^\n]+)*)`).FindAllStringSubmatch(doc, -1)
	if len(edits) == 0 {
		t.Error("the guide has no '# edit:' list of variables")
	}
	for _, m := range edits {
		for _, name := range regexp.MustCompile(`[a-z]+_[a-z_]+|\b(images|region|domain|invokers)\b`).FindAllString(m[1], -1) {
			if _, ok := mod.Variables[name]; !ok {
				t.Errorf("the guide's edit list names %q, which is not a variable", name)
			}
		}
	}
	// The secret the guide creates is the example's passphrase_secret.
	vars, err := terraform.LoadTFVars(filepath.Join(root, "terraform", "terraform.tfvars.example"))
	if err != nil {
		t.Fatal(err)
	}
	if s := vars["passphrase_secret"].AsString(); !strings.Contains(doc, "gcloud secrets create "+s) {
		t.Errorf("the guide does not create the secret %q of terraform.tfvars.example", s)
	}
}

// The Dockerfile has one target per function, runs as non-root, and keeps
// the Go toolchain out of the images that do not compile.
func TestDockerfile(t *testing.T) {
	root := repoRoot(t)
	df := read(t, root, "deploy/images/Dockerfile")
	stages := map[string]string{} // name → body
	var cur string
	for _, line := range strings.Split(df, "\n") {
		if m := regexp.MustCompile(`^FROM (\S+)(?: AS (\S+))?`).FindStringSubmatch(line); m != nil {
			cur = m[2]
			stages[cur] = line + "\n"
			if strings.HasSuffix(m[1], ":latest") || (!strings.Contains(m[1], ":") && stages[m[1]] == "") {
				t.Errorf("base image %s is not pinned", m[1])
			}
			continue
		}
		stages[cur] += line + "\n"
	}
	for _, fn := range []string{"challenge", "instance", "janitor"} {
		body, ok := stages[fn]
		if !ok {
			t.Errorf("no target %s", fn)
			continue
		}
		if !strings.Contains(body, "ENTRYPOINT [\"/usr/local/bin/challfn-"+fn+"\"]") {
			t.Errorf("target %s does not run challfn-%s", fn, fn)
		}
		if _, err := os.Stat(filepath.Join(root, "cmd", "challfn-"+fn)); err != nil {
			t.Logf("cmd/challfn-%s does not exist yet", fn)
		}
	}
	// instance and janitor inherit "engine": no Go toolchain, non-root.
	if e := stages["engine"]; !strings.Contains(e, "USER 65532") || strings.Contains(e, "/usr/local/go") || !strings.Contains(e, "pulumi-language-go") {
		t.Errorf("engine stage: want USER 65532, pulumi + pulumi-language-go, no Go toolchain:\n%s", e)
	}
	if c := stages["challenge"]; !strings.Contains(c, "USER 65532") || !strings.Contains(c, "/usr/local/go") || !strings.Contains(c, "CGO_ENABLED=0") {
		t.Errorf("challenge stage: want USER 65532, the Go toolchain and CGO_ENABLED=0:\n%s", c)
	}
}

// The README's "Deploy on Knative" and "Deploy on Cloud Run" sections are
// these guides, verbatim: what is checked here is what users read there.
func TestReadmeCarriesTheGuides(t *testing.T) {
	root := repoRoot(t)
	readme := read(t, root, "README.md")
	for _, doc := range []string{"docs/deploy-knative.md", "docs/deploy-cloudrun.md"} {
		if !strings.Contains(readme, strings.TrimSpace(read(t, root, doc))) {
			t.Errorf("README.md does not contain %s verbatim (paste it again)", doc)
		}
	}
}
