// Package langhost is challfn's Go language host for the Pulumi engine (docs/design.md, decision 7):
// the plugin `pulumi-language-go` that the engine starts to run a scenario program.
//
// It runs either a prebuilt binary (`runtime.options.binary` in Pulumi.yaml, relative to the
// program directory) or Go source, compiled once per content hash into a cache directory.
// It passes the run information to the program through the environment variables that
// sdk/v3's pulumi.Run reads, so programs written with plain pulumi.Run or with
// chall-manager's SDK run unchanged. It never installs dependencies nor resource plugins:
// scenarios are self-contained.
package langhost

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/pulumi/pulumi/sdk/v3/go/common/constant"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/challfn/challfn/shared/sandbox"
)

// Version is reported to the engine by GetPluginInfo.
const Version = "3.220.0"

// Host implements pulumirpc.LanguageRuntimeServer. Methods the engine does not need for
// up/preview/destroy/refresh are left to the embedded Unimplemented server, which answers
// codes.Unimplemented.
type Host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer

	mu            sync.Mutex
	engineAddress string

	builder *Builder
	// Stdout and Stderr receive the program's output; the engine shows what the host prints.
	Stdout, Stderr io.Writer
	// Sandbox runs the program (shared/sandbox: a jail of its own, its process tree ended
	// with it).
	Sandbox *sandbox.Runner
	// Hide lists host paths a jail never shows, besides the build cache, the program's
	// project and the home folder.
	Hide []string
	// OutputMax caps what the program may print to each of stdout and stderr; the rest is
	// read and dropped, so that a chatty program neither blocks nor floods the engine,
	// its event log and challfn's memory.
	OutputMax int64
	// LogMax caps the logs a jailed program sends the engine (ctx.Log): past it, they
	// are dropped. The engine keeps every log message in memory until the operation ends.
	LogMax int64
}

// DefaultOutputMax is Host.OutputMax's default: far more than any diagnostic needs.
const DefaultOutputMax = 1 << 20

// DefaultLogMax is Host.LogMax's default.
const DefaultLogMax = 16 << 20

// New returns a host that talks to the engine at engineAddress (may be empty: the engine
// then gives it in Handshake) and compiles Go sources into cacheDir.
func New(engineAddress, cacheDir string) *Host {
	return &Host{
		engineAddress: engineAddress,
		builder:       &Builder{CacheDir: cacheDir},
		Stdout:        os.Stdout,
		Stderr:        os.Stderr,
		Sandbox:       &sandbox.Runner{Mode: sandbox.Off},
		OutputMax:     DefaultOutputMax,
		LogMax:        DefaultLogMax,
	}
}

func (h *Host) engine() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.engineAddress
}

// Handshake records the engine address when the engine sends it.
func (h *Host) Handshake(_ context.Context, req *pulumirpc.LanguageHandshakeRequest) (*pulumirpc.LanguageHandshakeResponse, error) {
	if req.GetEngineAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "handshake without an engine address")
	}
	h.mu.Lock()
	h.engineAddress = req.GetEngineAddress()
	h.mu.Unlock()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

// GetPluginInfo reports the host's version.
func (h *Host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

// GetRequiredPlugins returns nothing: scenarios bring no resource plugin to download.
func (h *Host) GetRequiredPlugins(context.Context, *pulumirpc.GetRequiredPluginsRequest) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

// GetRequiredPackages returns nothing, for the same reason.
func (h *Host) GetRequiredPackages(context.Context, *pulumirpc.GetRequiredPackagesRequest) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

// InstallDependencies does nothing: Go sources are compiled from their own go.mod at Run,
// and a prebuilt binary has no dependency.
func (h *Host) InstallDependencies(_ *pulumirpc.InstallDependenciesRequest, _ pulumirpc.LanguageRuntime_InstallDependenciesServer) error {
	return nil
}

// GetProgramDependencies returns nothing (used by `pulumi about` and telemetry only).
func (h *Host) GetProgramDependencies(context.Context, *pulumirpc.GetProgramDependenciesRequest) (*pulumirpc.GetProgramDependenciesResponse, error) {
	return &pulumirpc.GetProgramDependenciesResponse{}, nil
}

// RuntimeOptionsPrompts has no option to ask for.
func (h *Host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}

// About describes the runtime the host was built with.
func (h *Host) About(context.Context, *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	exe, _ := os.Executable()
	return &pulumirpc.AboutResponse{Executable: exe, Version: runtime.Version()}, nil
}

// Run resolves the program (prebuilt or compiled), runs it to completion and reports how it
// ended the way the engine expects: exit status 32 means pulumi.Run already logged the error
// to the engine (Bail), any other failure becomes RunResponse.Error.
func (h *Host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	engine := h.engine()
	if engine == "" {
		return nil, status.Error(codes.FailedPrecondition, "no engine address: Handshake must come before Run")
	}
	progDir, rootDir := programDirs(req)
	opts, err := parseOptions(req.GetInfo().GetOptions().AsMap())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	bin := ""
	if opts.Binary != "" {
		bin, err = resolveBinary(opts.Binary, progDir, rootDir)
		if err != nil {
			return &pulumirpc.RunResponse{Error: err.Error()}, nil
		}
	} else {
		bin, err = h.builder.Build(ctx, progDir)
		if err != nil {
			return &pulumirpc.RunResponse{Error: err.Error()}, nil
		}
	}

	env, err := Env(req, engine)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "prepare program environment: %v", err)
	}

	pwd := req.GetPwd()
	if pwd == "" {
		pwd = progDir
	}
	prog := h.program(req, bin, pwd, progDir, engine)
	prog.Env = append(h.programEnviron(os.Environ()), env...)
	tail := &tailBuffer{max: 4096}
	stdout := &cappedWriter{w: h.Stdout, max: h.OutputMax, what: "stdout"}
	stderr := &cappedWriter{w: h.Stderr, max: h.OutputMax, what: "stderr"}
	prog.Stdout, prog.Stderr = stdout, io.MultiWriter(stderr, tail)
	// A jailed program reaches the engine through proxies (proxy.go).
	var proxies []*engineProxy
	defer func() {
		for _, p := range proxies {
			p.stop()
		}
	}()
	var mu sync.Mutex
	warn := func(msg string) { fmt.Fprintln(prog.Stderr, msg) }
	prog.Serve = func(addr string, l net.Listener) {
		p, err := newEngineProxy(addr, h.LogMax, warn)
		if err != nil {
			warn("challfn: " + err.Error())
			l.Close()
			return
		}
		mu.Lock()
		proxies = append(proxies, p)
		mu.Unlock()
		p.serve(l)
	}
	res, err := h.Sandbox.Run(ctx, prog)
	stdout.finish()
	stderr.finish()
	if err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run program %s: %v", bin, err)}, nil
	}
	if res.Code == 0 {
		return &pulumirpc.RunResponse{}, nil
	}
	if res.Code < 0 {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run program %s", bin)}, nil
	}
	if res.Code == constant.ExitStatusLoggedError {
		return &pulumirpc.RunResponse{Bail: true}, nil
	}
	msg := fmt.Sprintf("program exited with non-zero exit code: %d", res.Code)
	if t := tail.String(); t != "" {
		msg += "\n" + t
	}
	return &pulumirpc.RunResponse{Error: msg}, nil
}

// program is what the sandbox needs to run bin for req: its folder and executable shown
// read-only, the engine's two addresses forwarded, challfn's paths hidden.
func (h *Host) program(req *pulumirpc.RunRequest, bin, pwd, progDir, engine string) sandbox.Program {
	p := sandbox.Program{Path: bin, Args: req.GetArgs(), Dir: pwd}
	p.ReadOnly = []string{progDir}
	if pwd != progDir {
		p.ReadOnly = append(p.ReadOnly, pwd)
	}
	if !strings.HasPrefix(bin, progDir+string(filepath.Separator)) {
		p.ReadOnly = append(p.ReadOnly, bin)
	}
	for _, a := range []string{req.GetMonitorAddress(), engine} {
		if a != "" {
			p.Forward = append(p.Forward, a)
		}
	}
	p.Hide = append(slices.Clone(h.Hide), h.builder.CacheDir, req.GetInfo().GetRootDirectory())
	if home, err := os.UserHomeDir(); err == nil {
		p.Hide = append(p.Hide, home)
	}
	return p
}

// programEnviron is the program's share of the host's environment: no credential, none
// of the sandbox's settings, and in a jail a HOME and TMPDIR that exist there.
func (h *Host) programEnviron(environ []string) []string {
	env := ProgramEnviron(environ)
	out := env[:0]
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case sandbox.EnvMode, sandbox.EnvBin, sandbox.EnvHide:
			continue
		case "HOME", "TMPDIR":
			if h.Sandbox.Mode != sandbox.Off {
				continue
			}
		}
		out = append(out, kv)
	}
	if h.Sandbox.Mode != sandbox.Off {
		out = append(out, "HOME=/tmp", "TMPDIR=/tmp")
	}
	return out
}

// Env returns the variables that sdk/v3's pulumi.Run reads (go/pulumi/run.go getEnvInfo).
func Env(req *pulumirpc.RunRequest, engineAddress string) ([]string, error) {
	cfg := req.GetConfig()
	if cfg == nil {
		cfg = map[string]string{}
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	keys := req.GetConfigSecretKeys()
	if keys == nil {
		keys = []string{}
	}
	keysJSON, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	env := []string{
		"PULUMI_CONFIG=" + string(cfgJSON),
		"PULUMI_CONFIG_SECRET_KEYS=" + string(keysJSON),
		"PULUMI_DRY_RUN=" + strconv.FormatBool(req.GetDryRun()),
		"PULUMI_PARALLEL=" + strconv.Itoa(int(req.GetParallel())),
		"PULUMI_MONITOR=" + req.GetMonitorAddress(),
		"PULUMI_ENGINE=" + engineAddress,
	}
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("PULUMI_PROJECT", req.GetProject())
	add("PULUMI_STACK", req.GetStack())
	add("PULUMI_ORGANIZATION", req.GetOrganization())
	add("PULUMI_ROOT_DIRECTORY", req.GetInfo().GetRootDirectory())
	return env, nil
}

// programDirs returns the program directory (where the sources or the binary live) and the
// project root (where Pulumi.yaml lives).
func programDirs(req *pulumirpc.RunRequest) (prog, root string) {
	info := req.GetInfo()
	prog, root = info.GetProgramDirectory(), info.GetRootDirectory()
	if prog == "" {
		prog = req.GetPwd()
	}
	if root == "" {
		root = prog
	}
	return prog, root
}

// Options are the `runtime.options` of Pulumi.yaml this host understands.
type Options struct {
	Binary string
}

func parseOptions(m map[string]any) (Options, error) {
	var o Options
	if v, ok := m["binary"]; ok && v != nil {
		s, ok := v.(string)
		if !ok {
			return o, fmt.Errorf("runtime option binary must be a string, got %T", v)
		}
		o.Binary = s
	}
	return o, nil
}

// resolveBinary finds a prebuilt program: absolute, or relative to the program directory,
// then to the project root.
func resolveBinary(bin, progDir, rootDir string) (string, error) {
	candidates := []string{bin}
	if !filepath.IsAbs(bin) {
		candidates = []string{filepath.Join(progDir, bin), filepath.Join(rootDir, bin)}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
			if st.Mode()&0o111 == 0 {
				return "", fmt.Errorf("prebuilt program %s is not executable", c)
			}
			return c, nil
		}
	}
	return "", fmt.Errorf("prebuilt program %q not found in %s", bin, progDir)
}

// cappedWriter passes the first max bytes on to w and drops the rest, saying so once.
type cappedWriter struct {
	mu      sync.Mutex
	w       io.Writer
	max     int64
	what    string
	written int64
	dropped int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := int64(len(p))
	if room := c.max - c.written; room < n {
		if room > 0 {
			_, _ = c.w.Write(p[:room])
			c.written += room
		}
		if c.dropped == 0 {
			fmt.Fprintf(c.w, "\n[challfn: program %s over %d bytes is dropped]\n", c.what, c.max)
		}
		c.dropped += n - max(room, 0)
		return len(p), nil
	}
	c.written += n
	_, err := c.w.Write(p)
	if err != nil {
		// The engine stopped reading: keep the program running, drop the rest.
		c.dropped += n
		return len(p), nil
	}
	return len(p), nil
}

// finish says how much was dropped.
func (c *cappedWriter) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dropped > 0 {
		fmt.Fprintf(c.w, "[challfn: %d bytes of program %s dropped]\n", c.dropped, c.what)
	}
}

// tailBuffer keeps the last max bytes written, to quote a crashing program's last words.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
