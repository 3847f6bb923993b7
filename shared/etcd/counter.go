package etcd

import (
	"context"
	"path"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
)

// Counter counts the unary gRPC calls a client makes, i.e. its etcd round
// trips (Range, Txn, Put, LeaseGrant, LeaseRevoke...). Streams (Watch, lease
// keep-alive) are counted apart, by stream opened. Benchmarks use it to report
// round trips per operation.
type Counter struct {
	unary   atomic.Int64
	streams atomic.Int64

	mu     sync.Mutex
	byName map[string]int64 // unary calls by method name ("Txn", "LeaseGrant"...)
}

// DialOption installs the counter on a client (Config.DialOptions).
func (c *Counter) DialOption() grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		c.unary.Add(1)
		c.mu.Lock()
		if c.byName == nil {
			c.byName = map[string]int64{}
		}
		c.byName[path.Base(method)]++
		c.mu.Unlock()
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

// StreamDialOption counts streams opened (watches, keep-alives).
func (c *Counter) StreamDialOption() grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		c.streams.Add(1)
		return streamer(ctx, desc, cc, method, opts...)
	})
}

// Unary returns the number of unary calls so far.
func (c *Counter) Unary() int64 { return c.unary.Load() }

// Calls returns the unary calls so far by method name ("Range", "Txn",
// "LeaseGrant"...), and resets them.
func (c *Counter) Calls() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.byName
	c.byName = nil
	return out
}

// Streams returns the number of streams opened so far.
func (c *Counter) Streams() int64 { return c.streams.Load() }
