// Package httpx is the HTTP plumbing every challfn entry point shares: the
// server's settings and the contract-shaped answers Go's server gives by itself
// (server.go), the router that matches REST paths as grpc-gateway does
// (route.go), bearer-token access control (auth.go) and the health endpoint
// (health.go). What a route does stays in the function packages.
package httpx
