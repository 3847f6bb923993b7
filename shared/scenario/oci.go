package scenario

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/retry"
)

// Media types of the scenario artifact format (contract §8.1, upstream's).
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

func newRemoteClient(opts RegistryOptions) *remoteClient {
	return &remoteClient{
		opts:  opts,
		http:  &http.Client{Transport: retry.NewTransport(otelhttp.NewTransport(http.DefaultTransport))},
		cache: auth.NewCache(),
	}
}

// parsedRef is a reference ready to be resolved: Target is the digest when
// the reference carries one (it wins over any tag), else the tag.
type parsedRef struct {
	raw    string
	ref    registry.Reference
	Target string
}

// parseRef applies the contract's parsing rules (§8.2): ORAS syntax, a
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
	desc, err := repo.Resolve(ctx, p.Target)
	if err != nil {
		return p, nil, ocispec.Descriptor{}, classify(raw, fmt.Errorf("resolve %s: %w", p.Target, err))
	}
	if desc.Digest.Algorithm() != digest.SHA256 {
		return p, nil, ocispec.Descriptor{}, newErr(KindOCI, raw, fmt.Sprintf("registry returned a %q digest, want sha256", desc.Digest.Algorithm()), nil)
	}
	if err := desc.Digest.Validate(); err != nil {
		return p, nil, ocispec.Descriptor{}, newErr(KindOCI, raw, "registry returned an invalid digest", err)
	}
	return p, repo, desc, nil
}
