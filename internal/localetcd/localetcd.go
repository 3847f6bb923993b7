// Package localetcd runs an etcd server inside this process, for the local
// run and the tests. It lives apart from shared/etcd so that the function
// binaries, which only talk to etcd, do not link its server.
package localetcd

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Embedded is an etcd server running inside this process (local run, tests).
type Embedded struct {
	e *embed.Etcd
}

// EmbedConfig tunes StartEmbeddedWith.
type EmbedConfig struct {
	DataDir string
	// NoFsync trades durability for speed: for throw-away test servers only.
	NoFsync bool
	// Logger receives the server logs; nil = discarded.
	Logger *zap.Logger
}

// StartEmbedded starts a single-member etcd storing its data in dataDir,
// listening on 127.0.0.1 with random ports, and waits until it serves.
func StartEmbedded(ctx context.Context, dataDir string) (*Embedded, error) {
	return StartEmbeddedWith(ctx, EmbedConfig{DataDir: dataDir})
}

// StartEmbeddedWith is StartEmbedded with options.
func StartEmbeddedWith(ctx context.Context, c EmbedConfig) (*Embedded, error) {
	if c.DataDir == "" {
		return nil, errors.New("etcd: embedded server needs a data dir")
	}
	cfg := embed.NewConfig()
	cfg.Name = "challfn"
	cfg.Dir = c.DataDir
	random := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{random}
	cfg.AdvertiseClientUrls = []url.URL{random}
	cfg.ListenPeerUrls = []url.URL{random}
	cfg.AdvertisePeerUrls = []url.URL{random}
	cfg.InitialCluster = cfg.Name + "=" + random.String()
	cfg.UnsafeNoFsync = c.NoFsync
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(lg)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd: start embedded server: %w", err)
	}
	ready := time.NewTimer(time.Minute)
	defer ready.Stop()
	select {
	case <-e.Server.ReadyNotify():
		return &Embedded{e: e}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("etcd: embedded server: %w", err)
	case <-ready.C:
		e.Close()
		return nil, errors.New("etcd: embedded server not ready after 1m")
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("etcd: embedded server: %w", ctx.Err())
	}
}

// Endpoints are the client URLs of the server.
func (s *Embedded) Endpoints() []string {
	eps := make([]string, 0, len(s.e.Clients))
	for _, l := range s.e.Clients {
		eps = append(eps, "http://"+l.Addr().String())
	}
	return eps
}

// Close stops the server.
func (s *Embedded) Close() { s.e.Close() }
