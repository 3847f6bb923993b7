package scenario

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/azureblob" // azblob://
	_ "gocloud.dev/blob/fileblob"  // file://
	_ "gocloud.dev/blob/gcsblob"   // gs://
	_ "gocloud.dev/blob/s3blob"    // s3://
	"gocloud.dev/gcerrors"
	"oras.land/oras-go/v2/registry/remote"

	"github.com/challfn/challfn/shared/bucketurl"
	"github.com/challfn/challfn/shared/iac"
)

// Previewer runs a `pulumi preview` of a program under a throw-away identity
// with the challenge's additional configuration (docs/contract.md §8.4); the iac
// engine implements it and cleans up after itself.
type Previewer interface {
	Preview(ctx context.Context, p iac.Program, additional map[string]string) error
}

// Config configures a Manager.
type Config struct {
	// StoreURL is the gocloud.dev bucket of prepared scenarios
	// (SCENARIO_STORE_URL): file:///…, gs://…, s3://…, azblob://….
	StoreURL string
	// CacheDir is the local cache root (CACHE_DIR); prepared scenarios are
	// unpacked under CacheDir/scenarios/<hex>.
	CacheDir string
	// Registry says how to reach OCI registries.
	Registry RegistryOptions
	// MaxBytes caps one artifact and one prepared archive (SCENARIO_MAX_BYTES);
	// 0 means DefaultMaxBytes.
	MaxBytes int64
	// GoBinary is the go command used to compile source scenarios; "" means
	// "go" on PATH. Only Register ever uses it.
	GoBinary string
	// Previewer validates a registered scenario; nil skips the preview.
	Previewer Previewer
}

// Scenario is a prepared scenario, ready for the engine.
type Scenario struct {
	// Ref is the reference it was registered from ("" when loaded by Get).
	Ref string
	// Digest is the sha256 manifest digest, "sha256:<hex>".
	Digest string
	// Program points at the local cached copy. Its folder is shared by every
	// user of the digest in this process: treat it as read-only.
	Program iac.Program
}

// Manager resolves, prepares and serves scenarios. It is safe for concurrent use.
type Manager struct {
	cfg    Config
	bucket *blob.Bucket
	remote *remoteClient
	locks  keyedMutex
	tracer trace.Tracer

	mu    sync.Mutex
	ready map[string]iac.Program // digest → program, in this process

	// Counters of expensive work, read by tests to prove "once".
	pulls, compiles, downloads, uploads atomic.Int64
}

const storePrefix = "scenarios/"

// New opens the store and prepares the cache directory.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.StoreURL == "" {
		return nil, errors.New("scenario: StoreURL is required")
	}
	if cfg.CacheDir == "" {
		d, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("scenario: no CacheDir and no user cache dir: %w", err)
		}
		cfg.CacheDir = filepath.Join(d, "challfn")
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	if cfg.GoBinary == "" {
		cfg.GoBinary = "go"
	}
	cacheDir, err := filepath.Abs(filepath.Join(cfg.CacheDir, "scenarios"))
	if err != nil {
		return nil, fmt.Errorf("scenario: cache dir: %w", err)
	}
	cfg.CacheDir = cacheDir
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("scenario: cache dir: %w", err)
	}
	storeURL, err := prepareFileStore(cfg.StoreURL)
	if err != nil {
		return nil, fmt.Errorf("scenario: store %q: %w", cfg.StoreURL, err)
	}
	b, err := blob.OpenBucket(ctx, storeURL)
	if err != nil {
		return nil, fmt.Errorf("scenario: open store %q: %w", cfg.StoreURL, err)
	}
	return &Manager{
		cfg:    cfg,
		bucket: b,
		remote: newRemoteClient(cfg.Registry),
		tracer: otel.Tracer("github.com/challfn/challfn/shared/scenario"),
		ready:  map[string]iac.Program{},
	}, nil
}

// Close releases the store.
func (m *Manager) Close() error { return m.bucket.Close() }

// Deadlines of the scenario store (a bucket) and of compiles: a registration
// or a cold Get never hangs on them. A compile of a Pulumi program from cold
// caches takes minutes; both stay under the functions' 600 s request timeout.
const (
	StoreTimeout   = 2 * time.Minute
	CompileTimeout = 8 * time.Minute
)

// Resolve returns the sha256 digest ("sha256:<hex>") ref points to now. It
// is never cached: a moving tag must be seen moving (hot updates compare
// digests).
func (m *Manager) Resolve(ctx context.Context, ref string) (string, error) {
	ctx, span := m.tracer.Start(ctx, "scenario.resolve", trace.WithAttributes(attribute.String("reference", ref)))
	defer span.End()
	_, _, desc, err := m.remote.resolve(ctx, ref)
	if err != nil {
		return "", record(span, err)
	}
	return desc.Digest.String(), nil
}

// Register resolves ref, makes sure the prepared (pulled, verified,
// compiled) scenario is in the store and the local cache, then previews it
// with additional. It compiles at most once per digest per store; a digest
// already in the store is only downloaded.
func (m *Manager) Register(ctx context.Context, ref string, additional map[string]string) (*Scenario, error) {
	ctx, span := m.tracer.Start(ctx, "scenario.register", trace.WithAttributes(attribute.String("reference", ref)))
	defer span.End()

	_, repo, desc, err := m.remote.resolve(ctx, ref)
	if err != nil {
		return nil, record(span, err)
	}
	dg := desc.Digest.String()
	span.SetAttributes(attribute.String("digest", dg))
	prog, err := m.prepare(ctx, ref, repo, desc)
	if err != nil {
		return nil, record(span, err)
	}
	if m.cfg.Previewer != nil {
		if err := m.cfg.Previewer.Preview(ctx, prog, additional); err != nil {
			if ctx.Err() != nil {
				return nil, record(span, newErr(KindOCI, ref, "preview interrupted", err))
			}
			return nil, record(span, newErr(KindSpec, ref, "preview failed: "+err.Error(), err))
		}
	}
	return &Scenario{Ref: ref, Digest: dg, Program: prog}, nil
}

// Get returns the prepared scenario of a registered digest, from the local
// cache or else from the store. It never compiles and never contacts a
// registry: a digest missing from both is KindNotPrepared.
func (m *Manager) Get(ctx context.Context, dg string) (*Scenario, error) {
	ctx, span := m.tracer.Start(ctx, "scenario.get", trace.WithAttributes(attribute.String("digest", dg)))
	defer span.End()
	d, err := digest.Parse(dg)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return nil, record(span, newErr(KindMalformedRef, dg, "not a sha256 digest", err))
	}
	if p, ok := m.cached(dg); ok {
		span.SetAttributes(cacheHit(CacheMemory))
		return &Scenario{Digest: dg, Program: p}, nil
	}
	unlock, err := m.locks.lock(ctx, dg)
	if err != nil {
		return nil, record(span, newErr(KindStore, dg, "waiting for a concurrent load", err))
	}
	defer unlock()
	if p, ok := m.cached(dg); ok {
		span.SetAttributes(cacheHit(CacheMemory))
		return &Scenario{Digest: dg, Program: p}, nil
	}
	p, err := m.loadLocal(d)
	span.SetAttributes(cacheHit(CacheLocal))
	if errors.Is(err, fs.ErrNotExist) {
		span.SetAttributes(cacheHit(CacheStore))
		p, err = m.download(ctx, dg, d)
	}
	if err != nil {
		return nil, record(span, err)
	}
	return &Scenario{Digest: dg, Program: p}, nil
}

// prepare makes the digest available in the store and locally, under the
// digest's in-process lock so concurrent callers do the work once.
func (m *Manager) prepare(ctx context.Context, ref string, repo *remote.Repository, desc ocispec.Descriptor) (iac.Program, error) {
	dg := desc.Digest.String()
	span := trace.SpanFromContext(ctx)
	if p, ok := m.cached(dg); ok {
		span.SetAttributes(cacheHit(CacheMemory))
		return p, nil
	}
	unlock, err := m.locks.lock(ctx, dg)
	if err != nil {
		return iac.Program{}, newErr(KindStore, ref, "waiting for a concurrent load", err)
	}
	defer unlock()
	if p, ok := m.cached(dg); ok {
		span.SetAttributes(cacheHit(CacheMemory))
		return p, nil
	}
	key := storeKey(desc.Digest)
	ectx, cancel := context.WithTimeout(ctx, StoreTimeout)
	inStore, err := m.bucket.Exists(ectx, key)
	cancel()
	if err != nil {
		return iac.Program{}, newErr(KindStore, ref, "scenario store", err)
	}
	if inStore {
		if p, err := m.loadLocal(desc.Digest); err == nil {
			span.SetAttributes(cacheHit(CacheLocal))
			return p, nil
		}
		span.SetAttributes(cacheHit(CacheStore))
		return m.download(ctx, ref, desc.Digest)
	}
	span.SetAttributes(cacheHit(CacheMiss))

	// First registration of this digest on this store: pull, verify and
	// compile in a temporary folder, publish to the store, then to the cache.
	tmp, err := os.MkdirTemp(m.cfg.CacheDir, ".pull-"+desc.Digest.Encoded()[:12]+"-")
	if err != nil {
		return iac.Program{}, newErr(KindStore, ref, "local cache", err)
	}
	defer os.RemoveAll(tmp)
	m.pulls.Add(1)
	if err := m.pullSpan(ctx, ref, repo, desc, tmp); err != nil {
		return iac.Program{}, err
	}
	proj, err := m.preprocess(ctx, ref, tmp)
	if err != nil {
		return iac.Program{}, err
	}
	if err := m.upload(ctx, ref, desc.Digest, tmp, proj); err != nil {
		return iac.Program{}, err
	}
	return m.install(ref, desc.Digest, tmp, proj)
}

func (m *Manager) pullSpan(ctx context.Context, ref string, repo *remote.Repository, desc ocispec.Descriptor, dir string) error {
	ctx, span := m.tracer.Start(ctx, "scenario.pull")
	defer span.End()
	return record(span, pull(ctx, ref, repo, desc, dir, m.cfg.MaxBytes))
}

// preprocess validates the project (docs/contract.md §8.3) and compiles it when it ships no binary.
func (m *Manager) preprocess(ctx context.Context, ref, dir string) (string, error) {
	p, err := readProject(dir)
	if err != nil {
		return "", newErr(KindSpec, ref, err.Error(), err)
	}
	if p.binary != "" {
		if err := checkBinary(dir, p.binary); err != nil {
			return "", newErr(KindSpec, ref, err.Error(), err)
		}
		return p.name, nil
	}
	ctx, span := m.tracer.Start(ctx, "scenario.compile")
	defer span.End()
	m.compiles.Add(1)
	if err := compile(ctx, m.cfg.GoBinary, dir); err != nil {
		return "", record(span, newErr(KindPreprocessing, ref, err.Error(), err))
	}
	if err := p.setBinary(dir); err != nil {
		return "", record(span, newErr(KindPreprocessing, ref, "rewrite project file", err))
	}
	return p.name, nil
}

// upload publishes dir as the digest's prepared archive. The object only
// becomes visible when complete (every gocloud driver commits on Close);
// cancelling the write context aborts it.
func (m *Manager) upload(ctx context.Context, ref string, d digest.Digest, dir, project string) (err error) {
	ctx, span := m.tracer.Start(ctx, "scenario.store.upload")
	defer span.End()
	wctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	w, err := m.bucket.NewWriter(wctx, storeKey(d), &blob.WriterOptions{
		ContentType: "application/gzip",
		Metadata:    map[string]string{"project": project, "digest": d.String()},
	})
	if err != nil {
		return record(span, newErr(KindStore, ref, "scenario store", err))
	}
	if err := writeArchive(w, dir); err != nil {
		cancel()
		_ = w.Close()
		return record(span, newErr(KindStore, ref, "write scenario archive", err))
	}
	if err := w.Close(); err != nil {
		return record(span, newErr(KindStore, ref, "scenario store", err))
	}
	m.uploads.Add(1)
	return nil
}

// download fetches the digest's prepared archive into the local cache.
func (m *Manager) download(ctx context.Context, ref string, d digest.Digest) (iac.Program, error) {
	ctx, span := m.tracer.Start(ctx, "scenario.store.download")
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, StoreTimeout)
	defer cancel()
	r, err := m.bucket.NewReader(ctx, storeKey(d), nil)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return iac.Program{}, record(span, newErr(KindNotPrepared, ref, "digest "+d.String()+" was never registered on this store", err))
	}
	if err != nil {
		return iac.Program{}, record(span, newErr(KindStore, ref, "scenario store", err))
	}
	defer r.Close()
	m.downloads.Add(1)
	tmp, err := os.MkdirTemp(m.cfg.CacheDir, ".get-"+d.Encoded()[:12]+"-")
	if err != nil {
		return iac.Program{}, record(span, newErr(KindStore, ref, "local cache", err))
	}
	defer os.RemoveAll(tmp)
	if err := readArchive(r, tmp, m.cfg.MaxBytes); err != nil {
		return iac.Program{}, record(span, newErr(KindStore, ref, "read scenario archive", err))
	}
	p, err := readProject(tmp)
	if err != nil || p.binary == "" {
		return iac.Program{}, record(span, newErr(KindStore, ref, "stored scenario is not prepared", err))
	}
	prog, err := m.install(ref, d, tmp, p.name)
	return prog, record(span, err)
}

// install moves a complete prepared folder to its final place. The rename is
// atomic, so another process sharing CacheDir sees all of it or nothing; if
// one got there first, its copy is used.
func (m *Manager) install(ref string, d digest.Digest, tmp, project string) (iac.Program, error) {
	final := m.localDir(d)
	// MkdirTemp made it 0700: a scenario program jailed under another uid
	// (shared/sandbox, FlavorRoot) must read its own folder, and sees no other.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return iac.Program{}, newErr(KindStore, ref, "local cache", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if p, lerr := m.loadLocal(d); lerr == nil {
			return p, nil
		}
		return iac.Program{}, newErr(KindStore, ref, "local cache", err)
	}
	prog := iac.Program{Dir: final, Project: project}
	m.remember(d.String(), prog)
	return prog, nil
}

// loadLocal returns the cached program of d, fs.ErrNotExist if absent.
func (m *Manager) loadLocal(d digest.Digest) (iac.Program, error) {
	dir := m.localDir(d)
	st, err := os.Stat(dir)
	if err != nil {
		return iac.Program{}, err
	}
	if st.Mode().Perm() != 0o755 { // installed before install made it 0755
		_ = os.Chmod(dir, 0o755)
	}
	p, err := readProject(dir)
	if err != nil {
		return iac.Program{}, newErr(KindStore, d.String(), "cached scenario is unreadable", err)
	}
	prog := iac.Program{Dir: dir, Project: p.name}
	m.remember(d.String(), prog)
	return prog, nil
}

func (m *Manager) localDir(d digest.Digest) string {
	return filepath.Join(m.cfg.CacheDir, d.Encoded())
}

func (m *Manager) cached(dg string) (iac.Program, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.ready[dg]
	return p, ok
}

func (m *Manager) remember(dg string, p iac.Program) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ready[dg] = p
}

// prepareFileStore makes a file:// store usable as given: the folder is
// created, and temporary files are written next to their final name, since
// fileblob's default (os.TempDir, then rename) fails when the store is on
// another mount, as a container volume usually is.
func prepareFileStore(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "file" {
		return raw, nil // other schemes are the driver's business
	}
	if err := os.MkdirAll(filepath.FromSlash(u.Path), 0o755); err != nil {
		return "", err
	}
	return bucketurl.Normalize(raw)
}

func storeKey(d digest.Digest) string {
	return storePrefix + d.Encoded() + ".tar.gz"
}

// Where a prepared scenario came from, attribute "scenario.cache" of the
// scenario.get and scenario.register spans: a miss means pull and compile.
const (
	CacheMemory = "memory" // already loaded by this function instance
	CacheLocal  = "local"  // the local cache folder (a warm instance)
	CacheStore  = "store"  // downloaded from the scenario store (compiled by another instance)
	CacheMiss   = "miss"   // pulled from the registry and compiled here
)

func cacheHit(where string) attribute.KeyValue { return attribute.String("scenario.cache", where) }

// record marks the span failed and returns err unchanged.
func record(span trace.Span, err error) error {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, strings.SplitN(err.Error(), "\n", 2)[0])
	}
	return err
}

// keyedMutex is a per-key mutex whose waits honour the context.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{}
	refs int
}

func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{ch: make(chan struct{}, 1)}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()

	release := func() {
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
