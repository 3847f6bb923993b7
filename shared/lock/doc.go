// Package lock is the challenge → instance readers/writer lock chain of
// docs/contract.md §6 on etcd, fixed where upstream is wrong.
//
// Every acquisition grants its own short lease (TTL = recovery time after a
// crash) kept alive by the acquiring request only, and writes its own keys,
// one per level it holds:
//
//	<prefix>/lock/c/<challenge>/<r|w>/<lease hex>              challenge
//	<prefix>/lock/i/<challenge>/<identity>/<r|w>/<lease hex>   instance
//	<prefix>/lock/s/<name>/w/<lease hex>                       singleton (TryLock)
//
// Level directories never nest (c/ and i/ are siblings), so a prefix range
// of one level never sees another. Because keys are per acquisition (not per
// etcd session, unlike concurrency.Mutex), two goroutines of one process
// exclude each other like two processes do.
//
// Order at a level is the etcd create revision (FIFO). A reader waits for
// the earlier writers of its level, a writer for every earlier key: a
// waiting writer therefore blocks readers arriving after it (writer
// preference). A waiter watches the deletion of its latest conflicting
// predecessor, then looks again.
//
// Uncontended, a whole chain is taken in one transaction whose compares say
// "no conflicting key at any level" (a range compare on CreateRevision = 0),
// so a chain costs 3 round trips: grant, txn, revoke. Otherwise the chain is
// taken level by level, and a level is enqueued only while the level above is
// held: that order is what prevents deadlocks. (Upstream's global "stop the
// world" level is gone: queries read one etcd revision and take no lock.)
//
// Release revokes the lease, which deletes every key at once. If that fails
// (etcd unreachable, process frozen or killed), the keep-alive is gone and the
// lease expires after TTL, freeing the locks.
//
// Files: level.go (modes, chains, key layout), session.go (leases, Held),
// quiet.go (a chain held for one write, as a fence),
// acquire.go (Acquire, TryLock, InstanceBusy), wait.go (waiting for a
// predecessor).
package lock
