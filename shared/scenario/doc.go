// Package scenario fetches, verifies, prepares and caches challenge scenarios.
//
// A scenario is upstream's artifact (docs/contract.md §8.1): an OCI image manifest of
// artifact type application/vnd.ctfer-io.scenario whose layers are the files
// of a Pulumi Go project, each titled by its relative path. Push writes one;
// Manager turns a reference into a program the iac engine can run.
//
// # Where compiled scenarios live, and why
//
// Functions are stateless and scale to zero: the instance that registers a
// challenge is rarely the one that later deploys it, and a cold instance
// must deploy in seconds, not after a `go build` of the Pulumi SDK. So
// compilation happens exactly once, in Register, and its result is
// published to a blob bucket (SCENARIO_STORE_URL; file:// locally, gs://,
// s3:// or azblob:// in production: the same kind of bucket as the Pulumi
// state backend) under
//
//	scenarios/<sha256 hex of the manifest>.tar.gz   (metadata: project, digest)
//
// Get, used by every instance operation, reads only that bucket and the
// local cache (CACHE_DIR/scenarios/<hex>/): it never compiles and never talks
// to a registry, so instance creation does not depend on the registry being
// up nor on a Go toolchain in the image. Keys are content digests, so an
// entry never changes once written and needs no invalidation; a moving tag
// is handled by resolving it again (Resolve) and comparing digests.
//
// Loads of one digest happen once per process (a per-digest lock that
// honours contexts) and are safe across processes sharing a cache folder
// (work in a temporary folder, then an atomic rename) or a store (objects
// appear whole, and any two writers of a key write the same content).
//
// # Safety (docs/design.md, decision 10)
//
// A scenario is code run with the function's rights, so the loader trusts
// nothing in the artifact: registries can be restricted to an allow-list,
// layer titles must be clean relative paths, only regular files and their
// parent folders are ever created (through os.Root), every blob is checked
// against its digest and the total is capped while reading, whatever sizes
// the manifest declares.
//
// Errors are *Error values with a Kind; see Kind for the mapping to the
// contract's error catalogue.
package scenario
