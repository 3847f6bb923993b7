// Package etcd builds the etcd client every function shares (one per process,
// so connections are reused across requests) and runs an embedded etcd server
// for the local run and the tests.
package etcd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// DefaultDialTimeout bounds how long Connect waits for a first answer.
const DefaultDialTimeout = 5 * time.Second

// Config says how to reach etcd.
type Config struct {
	Endpoints   []string
	Username    string
	Password    string
	DialTimeout time.Duration // 0 = DefaultDialTimeout
	// CallTimeout bounds each KV and lease call (0 = DefaultCallTimeout);
	// a call that runs out fails with an error wrapping ErrUnavailable.
	CallTimeout time.Duration
	// DialOptions are appended to the client's gRPC options (interceptors,
	// e.g. Counter.DialOption or OpenTelemetry instrumentation).
	DialOptions []grpc.DialOption
}

// Connect creates a client and checks that etcd answers within the dial
// timeout: clientv3.New dials lazily, so without this probe an unreachable
// etcd would only show up in the first request, as a hang.
func Connect(ctx context.Context, cfg Config) (*clientv3.Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd: no endpoints")
	}
	timeout := cfg.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		Username:    cfg.Username,
		Password:    cfg.Password,
		DialTimeout: timeout,
		DialOptions: cfg.DialOptions,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
		// Keep the HTTP/2 connection alive between requests so a warm function
		// instance does not pay a reconnect after an idle period.
		DialKeepAliveTime:    30 * time.Second,
		DialKeepAliveTimeout: 10 * time.Second,
		PermitWithoutStream:  true,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd: connect %v: %w", cfg.Endpoints, err)
	}
	callTimeout := cfg.CallTimeout
	if callTimeout <= 0 {
		callTimeout = DefaultCallTimeout
	}
	bound(cli, callTimeout)
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// Any answer proves reachability, a permission error included (the
	// probe key may be outside the user's role).
	if _, err := cli.Get(pctx, "health", clientv3.WithCountOnly()); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		_ = cli.Close()
		return nil, fmt.Errorf("etcd: %v unreachable: %w", cfg.Endpoints, err)
	}
	return cli, nil
}
