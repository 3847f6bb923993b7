// Package etcdtest starts a real (embedded) etcd for tests.
package etcdtest

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/challfn/challfn/internal/localetcd"
	"github.com/challfn/challfn/shared/etcd"
)

// Server starts an embedded etcd in a temporary directory, stopped when the
// test ends.
func Server(t testing.TB) *localetcd.Embedded {
	t.Helper()
	srv, err := localetcd.StartEmbeddedWith(context.Background(), localetcd.EmbedConfig{DataDir: t.TempDir(), NoFsync: true})
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// Client connects a new client to srv, closed when the test ends. Extra
// Config fields (e.g. DialOptions) may be given in cfg; Endpoints are set here.
func Client(t testing.TB, srv *localetcd.Embedded, cfg etcd.Config) *clientv3.Client {
	t.Helper()
	cfg.Endpoints = srv.Endpoints()
	cli, err := etcd.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// Start is Server then Client: a fresh etcd and a client to it.
func Start(t testing.TB) *clientv3.Client {
	t.Helper()
	return Client(t, Server(t), etcd.Config{})
}
