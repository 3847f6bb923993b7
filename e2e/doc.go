// Package e2e holds challfn's end-to-end tests: the REST contract, the pool,
// hot updates, the janitor and event delivery, over real HTTP on loopback
// against a real etcd, a real OCI registry protocol and the real Pulumi
// engine (internal/testenv).
package e2e
