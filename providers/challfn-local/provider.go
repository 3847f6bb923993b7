package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/blang/semver"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/tokens"
)

const (
	pkgName = "challfn-local"
	// Version is what programs must ask for (pulumi.Version) so that the engine neither
	// looks for a newer plugin nor tries to download one.
	Version     = "0.1.0"
	serviceType = tokens.Type(pkgName + ":index:Service")
	host        = "127.0.0.1"
	// defaultGrace bounds each of SIGTERM and SIGKILL in Delete when the engine gives no
	// timeout.
	defaultGrace = 10 * time.Second
)

// Property names of a Service.
const (
	propFlag = resource.PropertyKey("flag") // input: the line sent to every connection
	propPort = resource.PropertyKey("port") // input: 0 picks a free port; output: the port
	propHost = resource.PropertyKey("host") // output: always 127.0.0.1
	propPID  = resource.PropertyKey("pid")  // output: the process serving
)

// provider implements the one resource, challfn-local:index:Service. Every change of its
// inputs replaces it; its whole state is in its outputs and its ID.
type provider struct {
	plugin.UnimplementedProvider
	// exe is the binary started in serve mode: this one (a test binary in unit tests).
	exe string
}

func newProvider() *provider {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return &provider{exe: exe}
}

func (p *provider) Pkg() tokens.Package { return pkgName }

func (p *provider) Close() error { return nil }

func (p *provider) SignalCancellation(context.Context) error { return nil }

func (p *provider) Handshake(context.Context, plugin.ProviderHandshakeRequest) (*plugin.ProviderHandshakeResponse, error) {
	return &plugin.ProviderHandshakeResponse{}, nil
}

func (p *provider) GetPluginInfo(context.Context) (plugin.PluginInfo, error) {
	v := semver.MustParse(Version)
	return plugin.PluginInfo{Version: &v}, nil
}

func (p *provider) GetSchema(context.Context, plugin.GetSchemaRequest) (plugin.GetSchemaResponse, error) {
	return plugin.GetSchemaResponse{Schema: []byte(schema)}, nil
}

// The provider has no configuration.
func (p *provider) CheckConfig(_ context.Context, req plugin.CheckConfigRequest) (plugin.CheckConfigResponse, error) {
	return plugin.CheckConfigResponse{Properties: req.News}, nil
}

func (p *provider) DiffConfig(context.Context, plugin.DiffConfigRequest) (plugin.DiffConfigResponse, error) {
	return plugin.DiffResult{Changes: plugin.DiffNone}, nil
}

func (p *provider) Configure(context.Context, plugin.ConfigureRequest) (plugin.ConfigureResponse, error) {
	return plugin.ConfigureResponse{}, nil
}

// serviceInputs are a Service's inputs once checked.
type serviceInputs struct {
	flag       string
	flagSecret bool
	port       int
}

// inputs reads and checks a Service's inputs. Unknown values (during a preview) read as
// their zero value with known=false.
func inputs(m resource.PropertyMap) (in serviceInputs, known bool, failures []plugin.CheckFailure) {
	known = true
	fail := func(k resource.PropertyKey, format string, a ...any) {
		failures = append(failures, plugin.CheckFailure{Property: k, Reason: fmt.Sprintf(format, a...)})
	}
	flag := m[propFlag]
	if flag.IsSecret() {
		in.flagSecret = true
		flag = flag.SecretValue().Element
	}
	switch {
	case flag.IsComputed() || flag.IsOutput() && !flag.OutputValue().Known:
		known = false
	case flag.IsOutput():
		in.flagSecret = in.flagSecret || flag.OutputValue().Secret
		flag = flag.OutputValue().Element
		fallthrough
	default:
		if !flag.IsString() {
			fail(propFlag, "flag must be a string")
		} else {
			in.flag = flag.StringValue()
		}
	}
	port, ok := m[propPort]
	switch {
	case !ok || port.IsNull():
	case port.ContainsUnknowns():
		known = false
	case port.IsNumber():
		n := port.NumberValue()
		if n != float64(int(n)) || n < 0 || n > 65535 {
			fail(propPort, "port must be an integer between 0 and 65535, not %v", n)
		} else {
			in.port = int(n)
		}
	default:
		fail(propPort, "port must be a number")
	}
	return in, known, failures
}

func (in serviceInputs) properties() resource.PropertyMap {
	flag := resource.NewStringProperty(in.flag)
	if in.flagSecret {
		flag = resource.MakeSecret(flag)
	}
	return resource.PropertyMap{propFlag: flag, propPort: resource.NewNumberProperty(float64(in.port))}
}

func (p *provider) Check(_ context.Context, req plugin.CheckRequest) (plugin.CheckResponse, error) {
	if req.Type != serviceType {
		return plugin.CheckResponse{}, fmt.Errorf("unknown resource type %s", req.Type)
	}
	in, known, failures := inputs(req.News)
	if len(failures) > 0 || !known {
		return plugin.CheckResponse{Properties: req.News, Failures: failures}, nil
	}
	return plugin.CheckResponse{Properties: in.properties()}, nil
}

// Diff replaces the Service whenever its flag or its requested port changes: a process
// cannot change either in place. A fixed port must be freed before the new process binds it.
func (p *provider) Diff(_ context.Context, req plugin.DiffRequest) (plugin.DiffResponse, error) {
	olds := req.OldInputs
	if len(olds) == 0 {
		olds = req.OldOutputs
	}
	var changed []resource.PropertyKey
	for _, k := range []resource.PropertyKey{propFlag, propPort} {
		o, n := olds[k], req.NewInputs[k]
		if n.ContainsUnknowns() || !unwrap(o).DeepEquals(unwrap(n)) && !(isZeroPort(k, o) && isZeroPort(k, n)) {
			changed = append(changed, k)
		}
	}
	if len(changed) == 0 {
		return plugin.DiffResult{Changes: plugin.DiffNone}, nil
	}
	in, _, _ := inputs(req.NewInputs)
	detailed := map[string]plugin.PropertyDiff{}
	for _, k := range changed {
		detailed[string(k)] = plugin.PropertyDiff{Kind: plugin.DiffUpdateReplace, InputDiff: true}
	}
	return plugin.DiffResult{
		Changes:             plugin.DiffSome,
		ReplaceKeys:         changed,
		ChangedKeys:         changed,
		DetailedDiff:        detailed,
		DeleteBeforeReplace: in.port != 0 || req.NewInputs[propPort].ContainsUnknowns(),
	}, nil
}

// unwrap drops the secret marker: making the flag secret changes no process.
func unwrap(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	return v
}

// isZeroPort: an absent port and port 0 are the same request.
func isZeroPort(k resource.PropertyKey, v resource.PropertyValue) bool {
	return k == propPort && (v.IsNull() || v.IsNumber() && v.NumberValue() == 0)
}

func (p *provider) Create(ctx context.Context, req plugin.CreateRequest) (plugin.CreateResponse, error) {
	in, known, failures := inputs(req.Properties)
	if len(failures) > 0 {
		return plugin.CreateResponse{}, fmt.Errorf("%s: %s", failures[0].Property, failures[0].Reason)
	}
	if req.Preview {
		outs := req.Properties.Copy()
		outs[propHost] = resource.NewStringProperty(host)
		outs[propPID] = resource.MakeComputed(resource.NewNumberProperty(0))
		if !known || in.port == 0 {
			outs[propPort] = resource.MakeComputed(resource.NewNumberProperty(0))
		}
		return plugin.CreateResponse{Properties: outs}, nil
	}
	id, err := newID()
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	pid, port, err := startService(p.exe, id, in.flag, in.port)
	if err != nil {
		return plugin.CreateResponse{}, err
	}
	return plugin.CreateResponse{
		ID:         resource.ID(id),
		Properties: outputs(in, pid, port),
		Status:     resource.StatusOK,
	}, nil
}

func outputs(in serviceInputs, pid, port int) resource.PropertyMap {
	outs := in.properties()
	outs[propHost] = resource.NewStringProperty(host)
	outs[propPort] = resource.NewNumberProperty(float64(port))
	outs[propPID] = resource.NewNumberProperty(float64(pid))
	return outs
}

func newID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(b[:]), nil
}

// state reads what Create recorded.
func state(outs resource.PropertyMap) (pid, port int) {
	if v := outs[propPID]; v.IsNumber() {
		pid = int(v.NumberValue())
	}
	if v := outs[propPort]; v.IsNumber() {
		port = int(v.NumberValue())
	}
	return pid, port
}

// Read reports the Service gone when its process is (refresh then drops it from the state).
func (p *provider) Read(_ context.Context, req plugin.ReadRequest) (plugin.ReadResponse, error) {
	pid, _ := state(req.State)
	if !ownsProcess(pid, string(req.ID)) {
		return plugin.ReadResponse{ReadResult: plugin.ReadResult{}, Status: resource.StatusOK}, nil
	}
	return plugin.ReadResponse{
		ReadResult: plugin.ReadResult{ID: req.ID, Inputs: req.Inputs, Outputs: req.State},
		Status:     resource.StatusOK,
	}, nil
}

// Update is never called: Diff replaces on every change.
func (p *provider) Update(context.Context, plugin.UpdateRequest) (plugin.UpdateResponse, error) {
	return plugin.UpdateResponse{}, errors.New("a Service is replaced, never updated")
}

// Delete stops the process and returns once its port is closed. A process already gone
// (killed, machine rebooted) is deleted already.
func (p *provider) Delete(ctx context.Context, req plugin.DeleteRequest) (plugin.DeleteResponse, error) {
	pid, port := state(req.Outputs)
	grace := defaultGrace
	if req.Timeout > 0 {
		grace = time.Duration(req.Timeout * float64(time.Second) / 2)
	}
	if err := stopService(ctx, pid, string(req.ID), port, grace); err != nil {
		return plugin.DeleteResponse{Status: resource.StatusUnknown}, err
	}
	return plugin.DeleteResponse{Status: resource.StatusOK}, nil
}

// schema describes the package for `pulumi package get-schema` and SDK generators; the
// engine does not need it to run programs.
const schema = `{
  "name": "challfn-local",
  "version": "` + Version + `",
  "description": "Resources on the machine running the Pulumi engine, for challfn examples and tests.",
  "resources": {
    "challfn-local:index:Service": {
      "description": "A TCP service on 127.0.0.1 that answers every connection with one line: the flag.",
      "inputProperties": {
        "flag": {"type": "string", "description": "The line sent to every connection."},
        "port": {"type": "integer", "description": "The port to listen on; 0 (default) picks a free one."}
      },
      "requiredInputs": ["flag"],
      "properties": {
        "flag": {"type": "string"},
        "host": {"type": "string", "description": "Always 127.0.0.1."},
        "port": {"type": "integer", "description": "The port the service listens on."},
        "pid": {"type": "integer", "description": "The serving process."}
      },
      "required": ["flag", "host", "port", "pid"]
    }
  }
}`
