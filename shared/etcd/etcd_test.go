package etcd_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/challfn/challfn/internal/etcdtest"
	"github.com/challfn/challfn/shared/etcd"
	"google.golang.org/grpc"
)

func TestEmbeddedServesAndCounts(t *testing.T) {
	srv := etcdtest.Server(t)
	var n etcd.Counter
	cli := etcdtest.Client(t, srv, etcd.Config{DialOptions: []grpc.DialOption{n.DialOption()}})
	ctx := context.Background()
	before := n.Unary()
	if _, err := cli.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("got %v", resp.Kvs)
	}
	if got := n.Unary() - before; got != 2 {
		t.Fatalf("counted %d unary calls for Put+Get, want 2", got)
	}
}

func TestConnectFailsFastWhenUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	_, err = etcd.Connect(context.Background(), etcd.Config{Endpoints: []string{"http://" + addr}, DialTimeout: 300 * time.Millisecond})
	if err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
}

func TestConnectNeedsEndpoints(t *testing.T) {
	if _, err := etcd.Connect(context.Background(), etcd.Config{}); err == nil {
		t.Fatal("Connect without endpoints succeeded")
	}
}
