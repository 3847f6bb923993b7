package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Media types of the scenario artifact format (docs/contract.md §8.1, upstream's).
const (
	ArtifactType  = "application/vnd.ctfer-io.scenario"
	FileMediaType = "application/vnd.ctfer-io.file"
)

// RegistryOptions say how to talk to registries.
type RegistryOptions struct {
	// PlainHTTP talks HTTP instead of HTTPS (OCI_INSECURE).
	PlainHTTP bool
	// Username and Password are static basic credentials (OCI_USERNAME,
	// OCI_PASSWORD), offered to the reference's registry when both are set.
	Username string
	Password string
	// AllowedRegistries, when not empty, lists the registry hosts
	// (host[:port], case-insensitive) references may point to
	// (OCI_ALLOWED_REGISTRIES).
	AllowedRegistries []string
}

// remoteClient holds what is shared by every registry call of one process:
// the HTTP stack (retries, tracing) and the auth token cache.
type remoteClient struct {
	opts  RegistryOptions
	http  *http.Client
	cache auth.Cache
}

// Deadlines of registry calls. A registry that accepts connections and never
// answers must fail a registration in bounded time, not hold the challenge's
// writer lock for ever: connecting, the response headers and every read of a
// body each have their own bound, and a resolution or a manifest fetch,
// retries included, has RegistryTimeout in all. A large layer may take longer
// than that, as long as bytes keep coming.
const (
	registryDialTimeout   = 10 * time.Second
	registryHeaderTimeout = 10 * time.Second
	registryIdleRead      = 10 * time.Second
	// RegistryTimeout bounds one resolution or manifest fetch (retries included).
	RegistryTimeout = 20 * time.Second
)

func newRemoteClient(opts RegistryOptions) *remoteClient {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: registryDialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = registryDialTimeout
	t.ResponseHeaderTimeout = registryHeaderTimeout
	return &remoteClient{
		opts:  opts,
		http:  &http.Client{Transport: retry.NewTransport(otelhttp.NewTransport(idleReads{t, registryIdleRead}))},
		cache: auth.NewCache(),
	}
}

// idleReads fails a response body read that gets no byte for idle: the body
// is closed under the blocked read, which then returns an error.
type idleReads struct {
	next http.RoundTripper
	idle time.Duration
}

func (t idleReads) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err == nil && resp.Body != nil {
		resp.Body = &idleBody{ReadCloser: resp.Body, idle: t.idle}
	}
	return resp, err
}

type idleBody struct {
	io.ReadCloser
	idle  time.Duration
	timer *time.Timer
}

func (b *idleBody) Read(p []byte) (int, error) {
	if b.timer == nil {
		b.timer = time.AfterFunc(b.idle, func() { b.ReadCloser.Close() })
	} else {
		b.timer.Reset(b.idle)
	}
	n, err := b.ReadCloser.Read(p)
	if !b.timer.Stop() && err != nil {
		err = fmt.Errorf("registry sent nothing for %s: %w", b.idle, err)
	}
	return n, err
}

func (b *idleBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	return b.ReadCloser.Close()
}

// parsedRef is a reference ready to be resolved: Target is the digest when
// the reference carries one (it wins over any tag), else the tag.
type parsedRef struct {
	raw    string
	ref    registry.Reference
	Target string
}

// parseRef applies the contract's parsing rules (docs/contract.md §8.2): ORAS syntax, a
// missing tag means "latest", a digest must be sha256 and takes precedence.
func parseRef(raw string) (parsedRef, error) {
	r, err := registry.ParseReference(raw)
	if err != nil {
		return parsedRef{}, newErr(KindMalformedRef, raw, err.Error(), err)
	}
	if r.Reference == "" {
		r.Reference = "latest"
	}
	if strings.Contains(r.Reference, ":") { // ParseReference kept only the digest
		d, err := r.Digest()
		if err != nil {
			return parsedRef{}, newErr(KindMalformedRef, raw, err.Error(), err)
		}
		if d.Algorithm() != digest.SHA256 {
			return parsedRef{}, newErr(KindMalformedRef, raw, fmt.Sprintf("digest algorithm %q is not supported, use sha256", d.Algorithm()), nil)
		}
	}
	return parsedRef{raw: raw, ref: r, Target: r.Reference}, nil
}

// allowed reports whether the reference's registry is on the allow-list.
func (c *remoteClient) allowed(p parsedRef) error {
	if len(c.opts.AllowedRegistries) == 0 {
		return nil
	}
	for _, h := range c.opts.AllowedRegistries {
		if strings.EqualFold(strings.TrimSpace(h), p.ref.Registry) {
			return nil
		}
	}
	return newErr(KindNotAllowed, p.raw, fmt.Sprintf("registry %q is not in the allowed registries", p.ref.Registry), nil)
}

// repository returns an ORAS client for the reference's repository, with the
// static credentials bound to that registry only.
func (c *remoteClient) repository(p parsedRef) *remote.Repository {
	cred := auth.EmptyCredential
	if c.opts.Username != "" && c.opts.Password != "" {
		cred = auth.Credential{Username: c.opts.Username, Password: c.opts.Password}
	}
	return &remote.Repository{
		Reference: p.ref,
		PlainHTTP: c.opts.PlainHTTP,
		Client: &auth.Client{
			Client:     c.http,
			Cache:      c.cache,
			Credential: auth.StaticCredential(p.ref.Registry, cred),
			Header:     http.Header{"User-Agent": {"challfn"}},
		},
	}
}

// resolve parses, checks the allow-list and resolves the reference to the
// descriptor of its manifest, whose digest must be sha256.
func (c *remoteClient) resolve(ctx context.Context, raw string) (parsedRef, *remote.Repository, ocispec.Descriptor, error) {
	p, err := parseRef(raw)
	if err != nil {
		return p, nil, ocispec.Descriptor{}, err
	}
	if err := c.allowed(p); err != nil {
		return p, nil, ocispec.Descriptor{}, err
	}
	repo := c.repository(p)
	rctx, cancel := context.WithTimeout(ctx, RegistryTimeout)
	defer cancel()
	desc, err := repo.Resolve(rctx, p.Target)
	if err != nil {
		return p, nil, ocispec.Descriptor{}, classify(raw, timedOut(ctx, rctx, fmt.Errorf("resolve %s: %w", p.Target, err)))
	}
	if desc.Digest.Algorithm() != digest.SHA256 {
		return p, nil, ocispec.Descriptor{}, newErr(KindOCI, raw, fmt.Sprintf("registry returned a %q digest, want sha256", desc.Digest.Algorithm()), nil)
	}
	if err := desc.Digest.Validate(); err != nil {
		return p, nil, ocispec.Descriptor{}, newErr(KindOCI, raw, "registry returned an invalid digest", err)
	}
	return p, repo, desc, nil
}

// errNoAnswer is a registry call cut by RegistryTimeout: the registry is
// unreachable for what the client can tell (classify).
type errNoAnswer struct{ err error }

func (e errNoAnswer) Error() string {
	return fmt.Sprintf("the registry did not answer within %s: %v", RegistryTimeout, e.err)
}
func (e errNoAnswer) Unwrap() error { return e.err }
func (errNoAnswer) Timeout() bool   { return true }
func (errNoAnswer) Temporary() bool { return true }

// timedOut marks err as errNoAnswer when call's own deadline ended it while
// the caller's parent context was still live.
func timedOut(parent, call context.Context, err error) error {
	if err != nil && parent.Err() == nil && errors.Is(call.Err(), context.DeadlineExceeded) {
		return errNoAnswer{err}
	}
	return err
}
