package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/challfn/challfn/functions/instance"
	"github.com/challfn/challfn/internal/testenv"
	"github.com/challfn/challfn/shared/api"
	"github.com/challfn/challfn/shared/events"
	"github.com/challfn/challfn/shared/scenario"
)

// Hostile input, end to end (issue 7, "Hostile input"): each case says what
// is sent and the answer expected. Where a case is a package concern with
// no HTTP side (the store archive, title cleaning), it is tested next to the
// package's fuzz target instead.

// hostileCase is one request and its expected answer: status, gRPC code
// (-1: not an error body) and a substring of the body ("" = any).
type hostileCase struct {
	name, method, path, body string
	hdr                      []string
	chunked                  bool
	status, code             int
	want                     string
}

func (c hostileCase) run(t *testing.T, base string) {
	t.Helper()
	var r io.Reader
	if c.body != "" {
		r = strings.NewReader(c.body)
		if c.chunked { // hide the length: the body is streamed chunked
			r = struct{ io.Reader }{r}
		}
	}
	req, err := http.NewRequest(c.method, base+c.path, r)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	for _, h := range c.hdr {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	got := secResp{resp.StatusCode, resp.Header, b}
	if c.code >= 0 {
		secError(t, c.name, got, c.status, c.code)
	} else if got.status != c.status {
		t.Fatalf("%s: status %d, want %d: %s", c.name, got.status, c.status, b)
	}
	if c.want != "" && !strings.Contains(string(b), c.want) {
		t.Fatalf("%s: body lacks %q: %s", c.name, c.want, b)
	}
	secNoneOf(t, c.name, string(b), "goroutine ", ".go:", testenv.Root())
}

func TestHostileRequests(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Env: map[string]string{"MAX_REQUEST_BYTES": "4096"}})
	ref := env.Scenario(t, "outputs")
	create := func(id string) {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"id": id, "scenario": ref})
		if r := secDo(t, env.URL, "POST", "/api/v1/challenge", string(body)); r.status != 200 {
			t.Fatalf("create %q: %d %s", id, r.status, r.body)
		}
	}
	create("base")
	// Confusables are opaque bytes: a Latin and a Cyrillic "a" name two
	// different challenges, and neither is folded into the other (no
	// normalisation means no collision an attacker could engineer).
	const latin, cyrillic = "conf-a", "conf-\u0430"
	create(latin)

	big := `{"id":"big","scenario":"` + ref + `","additional":{"k":"` + strings.Repeat("x", 5000) + `"}}`
	id256, id257 := strings.Repeat("i", 256), strings.Repeat("i", 257)
	event := func(typ string, extra ...string) []string {
		return append([]string{"Ce-Id: h1", "Ce-Source: //test", "Ce-Specversion: 1.0", "Ce-Type: " + typ, "Content-Type: application/json"}, extra...)
	}
	huge := strings.Repeat("k=v,", 16<<10)
	for _, c := range []hostileCase{
		// Oversized bodies and IDs.
		{name: "body over MAX_REQUEST_BYTES", method: "POST", path: "/api/v1/challenge", body: big, status: 400, code: 3},
		{name: "chunked body over MAX_REQUEST_BYTES", method: "POST", path: "/api/v1/challenge", body: big, chunked: true, status: 400, code: 3},
		{name: "instance body over the cap", method: "POST", path: "/api/v1/instance", body: `{"challengeId":"base","sourceId":"` + strings.Repeat("s", 5000) + `"}`, status: 400, code: 3},
		{name: "challenge id of 257 bytes", method: "POST", path: "/api/v1/challenge", body: `{"id":"` + id257 + `","scenario":"` + ref + `"}`, status: 400, code: 3, want: "TOO_LONG"},
		// Reads validate IDs like writes: an ID that could never be created is a 400.
		{name: "challenge id of 257 bytes in the path", method: "GET", path: "/api/v1/challenge/" + id257, status: 400, code: 3, want: "TOO_LONG"},
		{name: "challenge id of 256 bytes is valid", method: "GET", path: "/api/v1/challenge/" + id256, status: 404, code: 5},
		{name: "source id of 257 bytes", method: "POST", path: "/api/v1/instance", body: `{"challengeId":"base","sourceId":"` + id257 + `"}`, status: 400, code: 3, want: "TOO_LONG"},
		// Instance routes validate IDs on every method.
		{name: "source id of 257 bytes in the path", method: "GET", path: "/api/v1/instance/base/" + id257, status: 400, code: 3, want: "TOO_LONG"},
		{name: "delete with a source id of 257 bytes", method: "DELETE", path: "/api/v1/instance/base/" + id257, status: 400, code: 3, want: "TOO_LONG"},
		// Control characters, invalid UTF-8, separators.
		{name: "NUL in a challenge id", method: "POST", path: "/api/v1/challenge", body: `{"id":"a\u0000b","scenario":"` + ref + `"}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "newline in a challenge id", method: "POST", path: "/api/v1/challenge", body: `{"id":"a\nb","scenario":"` + ref + `"}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "DEL in a challenge id", method: "POST", path: "/api/v1/challenge", body: `{"id":"a\u007fb","scenario":"` + ref + `"}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "C1 control (NEL) in a challenge id", method: "POST", path: "/api/v1/challenge", body: `{"id":"a\u0085b","scenario":"` + ref + `"}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "escaped newline in the path", method: "GET", path: "/api/v1/challenge/a%0Ab", status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "update with a newline in the path", method: "PATCH", path: "/api/v1/challenge/a%0Ab", body: `{"timeout":"60s","updateMask":"timeout"}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "escaped NUL in a source id", method: "GET", path: "/api/v1/instance/base/a%00b", status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "renew with a NUL in the source id", method: "PATCH", path: "/api/v1/instance/base/a%00b", body: `{}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "control characters in a query", method: "GET", path: "/api/v1/instance?sourceId=a%00%0A%1Bb", status: 400, code: -1, want: "CONTROL_CHARACTER"},
		{name: "control character in a created source id", method: "POST", path: "/api/v1/instance", body: `{"challengeId":"base","sourceId":"a\u001bb"}`, status: 400, code: 3, want: "CONTROL_CHARACTER"},
		{name: "invalid UTF-8 in the path", method: "GET", path: "/api/v1/challenge/%FF%FE", status: 400, code: 3, want: "INVALID_UTF8"},
		{name: "invalid UTF-8 in a source id", method: "GET", path: "/api/v1/instance/base/%C0%AF", status: 400, code: 3, want: "INVALID_UTF8"},
		{name: "invalid UTF-8 in a query", method: "GET", path: "/api/v1/instance?sourceId=%FF", status: 400, code: -1, want: "INVALID_UTF8"},
		{name: "invalid UTF-8 in a body", method: "POST", path: "/api/v1/challenge", body: "{\"id\":\"\xff\",\"scenario\":\"" + ref + "\"}", status: 400, code: 3},
		{name: "slash in a challenge id", method: "POST", path: "/api/v1/challenge", body: `{"id":"a/b","scenario":"` + ref + `"}`, status: 400, code: 3, want: "SLASH"},
		{name: "dot-dot challenge id", method: "POST", path: "/api/v1/challenge", body: `{"id":"..","scenario":"` + ref + `"}`, status: 400, code: 3, want: "DOT_SEGMENT"},
		{name: "escaped slash in the path", method: "GET", path: "/api/v1/challenge/a%2Fb", status: 404, code: 5},
		{name: "escaped dot-dot in the path", method: "GET", path: "/api/v1/challenge/%2E%2E", status: 400, code: 3, want: "DOT_SEGMENT"},
		{name: "delete of an escaped dot-dot", method: "DELETE", path: "/api/v1/challenge/%2E%2E", status: 400, code: 3, want: "DOT_SEGMENT"},
		{name: "a prefix of an existing id is another id", method: "GET", path: "/api/v1/challenge/bas", status: 404, code: 5},
		// Unicode that is not a control character is accepted as opaque bytes.
		{name: "confusable is another challenge", method: "GET", path: "/api/v1/challenge/" + url.PathEscape(cyrillic), status: 404, code: 5},
		{name: "zero-width space is opaque", method: "GET", path: "/api/v1/challenge/conf%E2%80%8Ba", status: 404, code: 5},
		{name: "right-to-left override is opaque", method: "GET", path: "/api/v1/challenge/%E2%80%AEa-fnoc", status: 404, code: 5},
		// Forged or garbage trace headers are ignored: normal answers.
		{name: "garbage traceparent", method: "GET", path: "/api/v1/challenge/base", hdr: []string{"traceparent: garbage"}, status: 200, code: -1, want: `"id":"base"`},
		{name: "all-zero traceparent", method: "GET", path: "/api/v1/challenge/base", hdr: []string{"traceparent: 00-00000000000000000000000000000000-0000000000000000-01"}, status: 200, code: -1},
		{name: "future version traceparent", method: "GET", path: "/api/v1/challenge/base", hdr: []string{"traceparent: ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, status: 200, code: -1},
		{name: "forged valid traceparent", method: "GET", path: "/api/v1/challenge", hdr: []string{"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, status: 200, code: -1},
		{name: "oversized tracestate", method: "GET", path: "/api/v1/challenge/base", hdr: []string{"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate: " + huge}, status: 200, code: -1},
		{name: "oversized baggage", method: "GET", path: "/api/v1/challenge/base", hdr: []string{"baggage: " + huge}, status: 200, code: -1},
		{name: "garbage trace extension on an event", method: "POST", path: instance.EventsPath, body: `{"challengeId":"nope"}`, hdr: event(events.TypePoolFill, "Ce-Traceparent: garbage", "Ce-Tracestate: "+huge), status: 200, code: -1},
		{name: "event with garbage data", method: "POST", path: instance.EventsPath, body: `{"challengeId":`, hdr: event(events.TypePoolFill), status: 400, code: -1},
		{name: "event of an unknown type", method: "POST", path: instance.EventsPath, body: `{}`, hdr: event("io.challfn.nope"), status: 400, code: -1},
		{name: "delete event for an unknown identity", method: "POST", path: instance.EventsPath, body: `{"challengeId":"base","identity":"../../x"}`, hdr: event(events.TypeInstanceDelete), status: 200, code: -1},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, env.URL) })
	}

	create(cyrillic)
	r := secDo(t, env.URL, "GET", "/api/v1/challenge", "")
	if r.status != 200 || !bytes.Contains(r.body, []byte(`"id":"`+latin+`"`)) || !bytes.Contains(r.body, []byte(`"id":"`+cyrillic+`"`)) {
		t.Fatalf("confusables are not two challenges: %s", r.body)
	}
	for _, id := range []string{"base", latin, cyrillic} {
		if r := secDo(t, env.URL, "DELETE", "/api/v1/challenge/"+url.PathEscape(id), ""); r.status != 200 {
			t.Fatalf("delete %q: %d %s", id, r.status, r.body)
		}
	}
	env.Wait()
	if k := env.Keys(t); len(k) != 0 {
		t.Fatalf("keys left: %v", k)
	}
}

// hostileLayer is one file of a hand-made scenario artifact.
type hostileLayer struct {
	title string
	data  []byte
}

// hostilePush pushes layers as a scenario artifact, exactly as given (no
// title check: that is what the server must do), and returns its reference.
func hostilePush(t *testing.T, host, name string, layers []hostileLayer) string {
	t.Helper()
	ctx := context.Background()
	repo, err := remote.NewRepository(host + "/hostile/" + name)
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	var descs []ocispec.Descriptor
	for _, l := range layers {
		d := content.NewDescriptorFromBytes(scenario.FileMediaType, l.data)
		if ok, err := repo.Exists(ctx, d); err != nil {
			t.Fatal(err)
		} else if !ok {
			if err := repo.Push(ctx, d, bytes.NewReader(l.data)); err != nil {
				t.Fatal(err)
			}
		}
		d.Annotations = map[string]string{ocispec.AnnotationTitle: l.title}
		descs = append(descs, d)
	}
	man, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, scenario.ArtifactType, oras.PackManifestOptions{Layers: descs})
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Tag(ctx, man, "latest"); err != nil {
		t.Fatal(err)
	}
	return host + "/hostile/" + name + ":latest"
}

// hostileFiles reads a scenario folder as layers.
func hostileFiles(t *testing.T, name string) []hostileLayer {
	t.Helper()
	dir := filepath.Join(testenv.Root(), "scenarios", name)
	var out []hostileLayer
	for _, f := range []string{"Pulumi.yaml", "main.go", "go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, hostileLayer{f, b})
	}
	return out
}

func hostileRandom(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// hostileFind lists the files under roots whose base name starts with prefix.
func hostileFind(roots []string, prefix string) []string {
	var found []string
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && strings.HasPrefix(d.Name(), prefix) {
				found = append(found, p)
			}
			return nil
		})
	}
	return found
}

func TestHostileArtifacts(t *testing.T) {
	const capBytes = 1 << 20
	env := testenv.Start(t, testenv.Options{Env: map[string]string{"SCENARIO_MAX_BYTES": "1048576"}})
	host := env.Registry.Host()
	mark := "escaped-" + hex.EncodeToString(hostileRandom(t, 6))
	project := []byte("name: outputs\nruntime: go\n")
	register := func(ref string) secResp {
		body, _ := json.Marshal(map[string]string{"id": "artifact", "scenario": ref})
		return secDo(t, env.URL, "POST", "/api/v1/challenge", string(body))
	}

	for _, tc := range []struct {
		name   string
		layers []hostileLayer
		want   string
	}{
		{"parent traversal", []hostileLayer{{"Pulumi.yaml", project}, {"../" + mark, []byte("x")}}, "not a clean relative path"},
		{"deep traversal", []hostileLayer{{"Pulumi.yaml", project}, {"a/../../" + mark, []byte("x")}}, "not a clean relative path"},
		{"dot-slash traversal", []hostileLayer{{"Pulumi.yaml", project}, {"./../" + mark, []byte("x")}}, "not a clean relative path"},
		{"absolute path", []hostileLayer{{"Pulumi.yaml", project}, {"/tmp/" + mark, []byte("x")}}, "absolute file name"},
		{"NUL in a title", []hostileLayer{{"Pulumi.yaml", project}, {"a\x00b", []byte("x")}}, "contains NUL"},
		{"same file twice", []hostileLayer{{"Pulumi.yaml", project}, {"./Pulumi.yaml", []byte("name: other\nruntime: go\n")}}, "appears twice"},
		{"file and folder of one name", []hostileLayer{{"Pulumi.yaml", project}, {"d", []byte("x")}, {"d/e", []byte("y")}}, "cannot create"},
		{"one layer over the cap", []hostileLayer{{"Pulumi.yaml", project}, {"big.bin", hostileRandom(t, capBytes+1)}}, "exceed the 1048576 bytes cap"},
		{"layers summing over the cap", []hostileLayer{{"Pulumi.yaml", project}, {"a.bin", hostileRandom(t, 400<<10)}, {"b.bin", hostileRandom(t, 400<<10)}, {"c.bin", hostileRandom(t, 400<<10)}}, "exceed the 1048576 bytes cap"},
	} {
		ref := hostilePush(t, host, strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"), tc.layers)
		r := register(ref)
		s := secError(t, tc.name, r, 400, 3)
		if s.Message != "Scenario does not match specification." || !bytes.Contains(r.body, []byte(tc.want)) {
			t.Fatalf("%s: %s", tc.name, r.body)
		}
		secNoneOf(t, tc.name, string(r.body), env.Dir, env.App.Config.CacheDir)
	}
	roots := []string{filepath.Dir(env.Dir), filepath.Dir(env.App.Config.CacheDir), "/tmp"}
	if f := hostileFind(roots, mark); len(f) != 0 {
		t.Fatalf("a layer title escaped the scenario folder: %v", f)
	}
	// Nothing over the cap was written: oversized layers are refused from
	// their declared sizes, before any download.
	for _, root := range []string{env.Dir, env.App.Config.CacheDir} {
		_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasSuffix(p, ".bin") {
				t.Errorf("oversized layer written: %s", p)
			}
			return nil
		})
	}

	// A decompression bomb: layers are files, never decompressed, so a
	// gzip that would expand to 64 MiB stays its compressed size.
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if _, err := io.CopyN(zw, zeroReader{}, 64<<20); err != nil {
		t.Fatal(err)
	}
	zw.Close()
	if gz.Len() > capBytes/4 {
		t.Fatalf("bomb of %d bytes is not small", gz.Len())
	}
	layers := append(hostileFiles(t, "outputs"), hostileLayer{"bomb.gz", gz.Bytes()})
	ref := hostilePush(t, host, "bomb", layers)
	if r := register(ref); r.status != 200 {
		t.Fatalf("scenario with a compressed layer: %d %s", r.status, r.body)
	}
	bombs := hostileFind([]string{env.Dir, env.App.Config.CacheDir}, "bomb.gz")
	if len(bombs) == 0 {
		t.Fatal("bomb.gz not found in the cache")
	}
	for _, p := range bombs {
		if fi, err := os.Stat(p); err != nil || fi.Size() != int64(gz.Len()) {
			t.Fatalf("%s: %v, size %d, want %d (never decompressed)", p, err, fi.Size(), gz.Len())
		}
	}
	// The scenario store holds compiled scenarios as gzipped archives (the
	// one place challfn decompresses): a bomb there is refused by the same
	// cap; see shared/scenario's FuzzReadArchive and TestReadArchiveHostile.
	if r := secDo(t, env.URL, "DELETE", "/api/v1/challenge/artifact", ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Symlinks and special files can never be part of an artifact: the push
// tool refuses them, and an artifact's layers are plain blobs.
func TestHostileSpecialFiles(t *testing.T) {
	ctx := context.Background()
	env := testenv.Start(t, testenv.Options{})
	for _, tc := range []struct {
		name string
		make func(dir string) error
	}{
		{"symlink to a host file", func(dir string) error { return os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")) }},
		{"symlink to a folder", func(dir string) error { return os.Symlink("/etc", filepath.Join(dir, "etc")) }},
		{"fifo", func(dir string) error { return syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644) }},
		{"character device", func(dir string) error {
			return syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o644, 1<<8|3)
		}},
	} {
		dir := t.TempDir()
		for _, l := range hostileFiles(t, "outputs") {
			if err := os.WriteFile(filepath.Join(dir, l.title), l.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := tc.make(dir); err != nil {
			if os.IsPermission(err) {
				t.Logf("%s: cannot create one here (%v), case skipped", tc.name, err)
				continue
			}
			t.Fatal(err)
		}
		ref := env.Registry.Host() + "/hostile/special:latest"
		_, err := scenario.Push(ctx, dir, ref, scenario.RegistryOptions{PlainHTTP: true})
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("%s: push: %v", tc.name, err)
		}
	}
}

// A scenario that never exits is stopped at DEPLOY_TIMEOUT: a clean error,
// no stack, no held lock, nothing left running or recorded.
func TestHostileNeverExits(t *testing.T) {
	env := testenv.Start(t, testenv.Options{Env: map[string]string{"DEPLOY_TIMEOUT": "5s"}})
	ref := env.Scenario(t, "hostile")
	if r := secDo(t, env.URL, "POST", "/api/v1/challenge", `{"id":"hang","scenario":"`+ref+`"}`); r.status != 200 {
		t.Fatalf("create challenge: %d %s", r.status, r.body)
	}
	r := secDo(t, env.URL, "POST", "/api/v1/instance", `{"challengeId":"hang","sourceId":"a","additional":{"mode":"hang"}}`)
	if r.status/100 != 5 {
		t.Fatalf("hanging scenario: %d %s", r.status, r.body)
	}
	var s secStatus
	if err := json.Unmarshal(r.body, &s); err != nil || s.Details == nil || s.Message == "" {
		t.Fatalf("not in the contract's error shape: %s", r.body)
	}
	secNoneOf(t, "hang answer", string(r.body), "goroutine ", ".go:", testenv.Root(), env.Dir, env.App.Config.CacheDir)
	t.Logf("hanging scenario answered %d %s", r.status, r.body)

	// No lock is left held: the same source and another one deploy now.
	for _, src := range []string{"a", "b"} {
		if r := secDo(t, env.URL, "POST", "/api/v1/instance", `{"challengeId":"hang","sourceId":"`+src+`"}`); r.status != 200 {
			t.Fatalf("create %s after the timeout: %d %s", src, r.status, r.body)
		}
	}
	if s := env.Stacks(t); len(s) != 2 {
		t.Fatalf("stacks: %v, want the 2 live instances", s)
	}
	// The hanging program does not outlive its deadline.
	var left []string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if left = hostileProcesses(env.Dir, env.App.Config.CacheDir); len(left) == 0 {
			break
		}
	}
	if len(left) != 0 {
		t.Fatalf("processes left running: %v", left)
	}
	if r := secDo(t, env.URL, "DELETE", "/api/v1/challenge/hang", ""); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
}

// hostileProcesses lists the processes whose executable or command line
// lies under one of dirs.
func hostileProcesses(dirs ...string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		exe, _ := os.Readlink("/proc/" + e.Name() + "/exe")
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		for _, d := range dirs {
			if strings.HasPrefix(exe, d) || bytes.Contains(cmd, []byte(d)) {
				out = append(out, e.Name()+" "+exe+" "+strings.ReplaceAll(string(cmd), "\x00", " "))
				break
			}
		}
	}
	return out
}

// TestSlowBodies: clients that send their headers and then the body slowly,
// or never, are answered 400 once api.BodyTimeout has passed; they do not
// hold their connections and request slots for as long as they like.
func TestSlowBodies(t *testing.T) {
	env := testenv.Start(t, testenv.Options{})
	const n = 20
	host := strings.TrimPrefix(env.URL, "http://")
	type answer struct {
		took time.Duration
		resp string
		err  error
	}
	answers := make(chan answer, n)
	start := time.Now()
	for i := range n {
		go func() {
			c, err := net.Dial("tcp", host)
			if err != nil {
				answers <- answer{err: err}
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "POST /api/v1/instance HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"challengeId\":", host)
			if i%2 == 0 { // a trickle: one byte every few seconds
				go func() {
					for range 30 {
						time.Sleep(3 * time.Second)
						if _, err := c.Write([]byte(" ")); err != nil {
							return
						}
					}
				}()
			}
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Minute))
			b, err := io.ReadAll(c)
			answers <- answer{time.Since(start), string(b), err}
		}()
	}
	var slowest time.Duration
	for range n {
		a := <-answers
		if a.err != nil && !strings.Contains(a.resp, "400") {
			t.Fatalf("slow body: %v %q", a.err, a.resp)
		}
		if !strings.HasPrefix(a.resp, "HTTP/1.1 400") || !strings.Contains(a.resp, "TOO_SLOW") {
			t.Fatalf("slow body answered %q", a.resp)
		}
		slowest = max(slowest, a.took)
	}
	t.Logf("FIGURES slow bodies: %d connections answered 400 and closed, the last after %s (api.BodyTimeout %s)", n, slowest.Round(time.Millisecond), api.BodyTimeout)
}
