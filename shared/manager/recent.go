package manager

import (
	"sync"

	"github.com/challfn/challfn/shared/store"
)

// recent holds the records the hot paths of this manager saw last, so that
// the next renewal of an instance, or the next claim on a challenge, skips
// its read: the store asserts them in the write's own transaction, and a
// stale entry costs only the round trip it was meant to save (store.Stale,
// store.PoolHint). Nothing is ever answered from it, and nothing needs to
// invalidate it: another replica's writes make an entry stale, not wrong.
type recent struct {
	mu    sync.Mutex
	seen  map[sourceKey]seenInstance
	pools map[string]*store.PoolHint
}

type sourceKey struct{ cid, sid string }

type seenInstance struct {
	c  *store.Challenge
	in *store.Instance
}

// recentMax bounds each map (a few MiB of records at most): past it, an
// arbitrary entry makes room, which costs its next use one round trip.
const recentMax = 4096

// instance is what was last seen of the instance of sid on cid. The records
// are shared: read them, never change them.
func (r *recent) instance(cid, sid string) (*store.Challenge, *store.Instance, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.seen[sourceKey{cid, sid}]
	return s.c, s.in, ok
}

// saw remembers in (claimed) and its challenge c as current.
func (r *recent) saw(c *store.Challenge, in *store.Instance) {
	if in.Pooled() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen == nil {
		r.seen = map[sourceKey]seenInstance{}
	}
	makeRoom(r.seen)
	r.seen[sourceKey{in.ChallengeID, in.SourceID}] = seenInstance{c, in}
}

// forget drops what was seen of the instance of sid on cid.
func (r *recent) forget(cid, sid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.seen, sourceKey{cid, sid})
}

// takePool hands the pool hint of cid to one claim: concurrent claims would
// all aim at the same pooled instances, so the others read as before.
func (r *recent) takePool(cid string) *store.PoolHint {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.pools[cid]
	delete(r.pools, cid)
	return h
}

// putPool keeps h for the next claim on cid (nil: nothing to keep).
func (r *recent) putPool(cid string, h *store.PoolHint) {
	if h == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pools == nil {
		r.pools = map[string]*store.PoolHint{}
	}
	makeRoom(r.pools)
	r.pools[cid] = h
}

func makeRoom[K comparable, V any](m map[K]V) {
	if len(m) < recentMax {
		return
	}
	for k := range m {
		delete(m, k)
		return
	}
}
