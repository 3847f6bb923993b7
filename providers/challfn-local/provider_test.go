package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
)

func TestMain(m *testing.M) {
	// Unit tests start Services from the test binary itself (provider.exe): act as one.
	if len(os.Args) > 1 && os.Args[1] == serveArg {
		if err := serveMain(os.Args[2:]); err != nil {
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

func str(s string) resource.PropertyValue  { return resource.NewStringProperty(s) }
func num(n float64) resource.PropertyValue { return resource.NewNumberProperty(n) }
func unknown() resource.PropertyValue      { return resource.MakeComputed(str("")) }

func TestCheck(t *testing.T) {
	p := &provider{}
	tests := []struct {
		name     string
		news     resource.PropertyMap
		failures []resource.PropertyKey
		want     resource.PropertyMap
	}{
		{"flag only: port defaults to 0", resource.PropertyMap{propFlag: str("CTF{a}")}, nil,
			resource.PropertyMap{propFlag: str("CTF{a}"), propPort: num(0)}},
		{"fixed port", resource.PropertyMap{propFlag: str("x"), propPort: num(4242)}, nil,
			resource.PropertyMap{propFlag: str("x"), propPort: num(4242)}},
		{"secret flag stays secret", resource.PropertyMap{propFlag: resource.MakeSecret(str("s"))}, nil,
			resource.PropertyMap{propFlag: resource.MakeSecret(str("s")), propPort: num(0)}},
		{"unknown flag passes through", resource.PropertyMap{propFlag: unknown()}, nil,
			resource.PropertyMap{propFlag: unknown()}},
		{"missing flag", resource.PropertyMap{}, []resource.PropertyKey{propFlag}, nil},
		{"flag not a string", resource.PropertyMap{propFlag: num(1)}, []resource.PropertyKey{propFlag}, nil},
		{"port out of range", resource.PropertyMap{propFlag: str("x"), propPort: num(70000)}, []resource.PropertyKey{propPort}, nil},
		{"port not an integer", resource.PropertyMap{propFlag: str("x"), propPort: num(1.5)}, []resource.PropertyKey{propPort}, nil},
		{"port not a number", resource.PropertyMap{propFlag: str("x"), propPort: str("80")}, []resource.PropertyKey{propPort}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := p.Check(context.Background(), plugin.CheckRequest{Type: serviceType, News: tt.news})
			if err != nil {
				t.Fatal(err)
			}
			var got []resource.PropertyKey
			for _, f := range res.Failures {
				got = append(got, f.Property)
			}
			if strings.Join(keys(got), ",") != strings.Join(keys(tt.failures), ",") {
				t.Fatalf("failures = %v, want %v", res.Failures, tt.failures)
			}
			if tt.want != nil && !res.Properties.DeepEquals(tt.want) {
				t.Fatalf("properties = %v, want %v", res.Properties, tt.want)
			}
		})
	}
	if _, err := p.Check(context.Background(), plugin.CheckRequest{Type: "challfn-local:index:Other"}); err == nil {
		t.Fatal("Check of an unknown type succeeded")
	}
}

func keys(ks []resource.PropertyKey) []string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return s
}

func TestDiff(t *testing.T) {
	p := &provider{}
	old := resource.PropertyMap{propFlag: str("CTF{a}"), propPort: num(0)}
	tests := []struct {
		name    string
		olds    resource.PropertyMap
		news    resource.PropertyMap
		replace []string
		dbr     bool
	}{
		{"same", old, resource.PropertyMap{propFlag: str("CTF{a}"), propPort: num(0)}, nil, false},
		{"absent port is port 0", old, resource.PropertyMap{propFlag: str("CTF{a}")}, nil, false},
		{"made secret only", old, resource.PropertyMap{propFlag: resource.MakeSecret(str("CTF{a}")), propPort: num(0)}, nil, false},
		{"new flag, free port: create before delete", old, resource.PropertyMap{propFlag: str("CTF{b}"), propPort: num(0)}, []string{"flag"}, false},
		{"fixed port: delete before create", old, resource.PropertyMap{propFlag: str("CTF{a}"), propPort: num(4242)}, []string{"port"}, true},
		{"unknown flag", old, resource.PropertyMap{propFlag: unknown(), propPort: num(0)}, []string{"flag"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := p.Diff(context.Background(), plugin.DiffRequest{Type: serviceType, OldInputs: tt.olds, NewInputs: tt.news})
			if err != nil {
				t.Fatal(err)
			}
			if len(tt.replace) == 0 {
				if d.Changes != plugin.DiffNone {
					t.Fatalf("changes = %v, want none (%+v)", d.Changes, d)
				}
				return
			}
			if d.Changes != plugin.DiffSome || strings.Join(keys(d.ReplaceKeys), ",") != strings.Join(tt.replace, ",") {
				t.Fatalf("diff = %+v, want replacement of %v", d, tt.replace)
			}
			if d.DeleteBeforeReplace != tt.dbr {
				t.Fatalf("DeleteBeforeReplace = %v, want %v", d.DeleteBeforeReplace, tt.dbr)
			}
		})
	}
}

// dialFlag connects to 127.0.0.1:port and returns the line the service sent.
func dialFlag(t *testing.T, port int) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return strings.TrimSuffix(line, "\n")
}

func portClosed(port int) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// gone tells whether pid no longer runs: no such process, or a zombie waiting for its reaper.
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func testProvider(t *testing.T) *provider {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &provider{exe: exe}
}

func TestServiceLifecycle(t *testing.T) {
	ctx := context.Background()
	p := testProvider(t)
	for _, tt := range []struct {
		name string
		port int
	}{{"free port", 0}, {"fixed port", freePort(t)}} {
		t.Run(tt.name, func(t *testing.T) {
			flag := "CTF{" + tt.name + "}"
			ins := resource.PropertyMap{propFlag: str(flag), propPort: num(float64(tt.port))}
			cr, err := p.Create(ctx, plugin.CreateRequest{Type: serviceType, Properties: ins})
			if err != nil {
				t.Fatal(err)
			}
			pid, port := state(cr.Properties)
			if tt.port != 0 && port != tt.port {
				t.Fatalf("port = %d, want %d", port, tt.port)
			}
			if h := cr.Properties[propHost]; !h.IsString() || h.StringValue() != "127.0.0.1" {
				t.Fatalf("host = %v", h)
			}
			if cr.ID == "" || pid <= 0 || port <= 0 {
				t.Fatalf("create = %+v", cr)
			}
			// Every connection gets the flag.
			for range 3 {
				if got := dialFlag(t, port); got != flag {
					t.Fatalf("service replied %q, want %q", got, flag)
				}
			}
			// The flag is not on the command line (ps shows it to everyone).
			if cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline"); strings.Contains(string(cmd), flag) {
				t.Fatalf("flag on the command line: %q", cmd)
			}

			rr, err := p.Read(ctx, plugin.ReadRequest{Type: serviceType, ID: cr.ID, Inputs: ins, State: cr.Properties})
			if err != nil || rr.ID != cr.ID || rr.Outputs == nil {
				t.Fatalf("read of a running service = %+v, %v", rr, err)
			}

			del := plugin.DeleteRequest{Type: serviceType, ID: cr.ID, Inputs: ins, Outputs: cr.Properties}
			if _, err := p.Delete(ctx, del); err != nil {
				t.Fatal(err)
			}
			// Delete returns once the port is closed and the process gone, not later.
			if !portClosed(port) {
				t.Fatalf("port %d still open after Delete", port)
			}
			if !gone(pid) {
				t.Fatalf("process %d still running after Delete", pid)
			}

			rr, err = p.Read(ctx, plugin.ReadRequest{Type: serviceType, ID: cr.ID, Inputs: ins, State: cr.Properties})
			if err != nil || rr.Outputs != nil {
				t.Fatalf("read of a deleted service = %+v, %v", rr, err)
			}
			// Deleting what is already gone succeeds.
			if _, err := p.Delete(ctx, del); err != nil {
				t.Fatalf("second Delete: %v", err)
			}
		})
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func TestCreateOnTakenPortFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	p := testProvider(t)
	_, err = p.Create(context.Background(), plugin.CreateRequest{Type: serviceType,
		Properties: resource.PropertyMap{propFlag: str("x"), propPort: num(float64(port))}})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Create on a taken port: %v", err)
	}
}

// A pid recorded in the state but now used by another process (pid reuse, or a state
// copied from another machine) is never killed.
func TestDeleteSparesForeignProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	p := testProvider(t)
	outs := resource.PropertyMap{propFlag: str("x"), propPort: num(0), propPID: num(float64(cmd.Process.Pid))}
	if _, err := p.Delete(context.Background(), plugin.DeleteRequest{Type: serviceType, ID: "0123456789abcdef", Outputs: outs}); err != nil {
		t.Fatal(err)
	}
	if gone(cmd.Process.Pid) {
		t.Fatal("Delete killed a process that is not its service")
	}
}

func TestCreatePreviewStartsNothing(t *testing.T) {
	p := &provider{exe: "/nonexistent"} // starting anything would fail
	cr, err := p.Create(context.Background(), plugin.CreateRequest{Type: serviceType, Preview: true,
		Properties: resource.PropertyMap{propFlag: str("x"), propPort: num(0)}})
	if err != nil {
		t.Fatal(err)
	}
	if !cr.Properties[propPort].IsComputed() || !cr.Properties[propPID].IsComputed() || cr.ID != "" {
		t.Fatalf("preview create = %+v", cr)
	}
}

func TestEngineAddress(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"127.0.0.1:1234"}, "127.0.0.1:1234"},
		{[]string{"--logtostderr", "-v=9", "--tracing", "http://x", "127.0.0.1:1"}, "127.0.0.1:1"},
		{nil, ""},
	}
	for _, tt := range tests {
		if got := engineAddress(tt.args); got != tt.want {
			t.Errorf("engineAddress(%q) = %q, want %q", tt.args, got, tt.want)
		}
	}
}
