package store

import (
	"math/rand/v2"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// claiming spreads the claims this process makes at once over distinct
// pooled instances. Without it, a burst of claims on one challenge (a CTF's
// start: every team opens the same challenge) all aim at the lowest pooled
// instance, one wins, and the others lose a round trip each, then collide
// again among the next ones. With it, concurrent claims of one process never
// aim at the same instance; only claims from other processes can collide,
// and those are settled by the transaction's compares as before.
type claiming struct {
	mu sync.Mutex
	// aimed are the pool keys a claim of this process is attempting now.
	aimed map[string]bool
	// busy counts the claims in progress per challenge.
	busy map[string]int
}

// begin counts a claim on challenge cid in progress and returns how many
// pooled instances its first read should fetch: the lowest one alone when
// it is the only claim, enough to leave every concurrent claim its own
// otherwise.
func (c *claiming) begin(cid string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy == nil {
		c.busy, c.aimed = map[string]int{}, map[string]bool{}
	}
	c.busy[cid]++
	return min(int64(2*c.busy[cid]-1), claimSpread)
}

// end is begin's counterpart.
func (c *claiming) end(cid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.busy[cid]--; c.busy[cid] <= 0 {
		delete(c.busy, cid)
	}
}

// aim picks the record of kvs (not empty) to attempt and marks it aimed at:
// the first (lowest) one no other claim of this process aims at on a first
// attempt, a random one of those after a lost race (claims of other
// processes aim at the lowest too). When every one is aimed at, a random
// one: it may still be free when the others fail. release unmarks it.
func (c *claiming) aim(kvs []*mvccpb.KeyValue, retry bool) (kv *mvccpb.KeyValue, release func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	free := make([]*mvccpb.KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		if !c.aimed[string(kv.Key)] {
			free = append(free, kv)
			if !retry {
				break
			}
		}
	}
	if len(free) == 0 {
		return kvs[rand.IntN(len(kvs))], func() {}
	}
	kv = free[0]
	if retry {
		kv = free[rand.IntN(len(free))]
	}
	key := string(kv.Key)
	c.aimed[key] = true
	return kv, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.aimed, key)
	}
}
