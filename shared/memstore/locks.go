package memstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/manager"
)

// The lock chain of shared/lock, in memory: the same levels (challenge,
// instance, singleton), the same readers/writer rules and the
// same order (FIFO per level; a reader waits for the earlier writers of its
// level, a writer for every earlier entry, so a waiting writer blocks the
// readers that come after it). A chain enqueues at a level only while it
// holds the level above.

// entry is one acquisition's place at one level.
type entry struct {
	mode lock.Mode
	held *Held
}

// Held is an acquired chain. Expire stands for a lost lease (a frozen
// holder): its locks are freed and its writes fenced.
type Held struct {
	s      *Store
	levels []string // level keys held, in order
	// lost: released or expired; writes under it are refused.
	lost bool
	// quiet: a chain held for one write (Quiet): no place in any queue, its
	// writes refused while a conflicting entry is queued at one of them.
	quiet []level
}

// Acquire implements manager.Locks.
func (s *Store) Acquire(ctx context.Context, c lock.Chain) (manager.Held, error) {
	lvs, err := levels(c)
	if err != nil {
		return nil, err
	}
	h := &Held{s: s}
	for _, lv := range lvs {
		if err := s.enqueueAndWait(ctx, h, lv.key, lv.mode); err != nil {
			h.release()
			return nil, err
		}
	}
	return h, nil
}

// TryLock implements manager.Locks.
func (s *Store) TryLock(ctx context.Context, name string) (manager.Held, error) {
	key := "s/" + name
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queues[key]) > 0 {
		return nil, fmt.Errorf("%w: %s", lock.ErrLocked, name)
	}
	h := &Held{s: s}
	s.queues[key] = append(s.queues[key], entry{lock.Write, h})
	h.levels = append(h.levels, key)
	return h, nil
}

// Quiet implements manager.Locks.
func (s *Store) Quiet(c lock.Chain) (manager.Held, error) {
	lvs, err := levels(c)
	if err != nil {
		return nil, err
	}
	return &Held{s: s, quiet: lvs}, nil
}

// busy reports whether a write under the quiet chain h would conflict with
// an entry queued now (lock.Quiet's fence). Called with s.mu.
func (s *Store) busy(h *Held) bool {
	for _, lv := range h.quiet {
		for _, e := range s.queues[lv.key] {
			if lv.mode == lock.Write || e.mode == lock.Write {
				return true
			}
		}
	}
	return false
}

// Queued is how many acquisitions hold or wait for challenge cid's lock:
// what a test waits for before it lets a holder go.
func (s *Store) Queued(cid string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queues["c/"+cid])
}

// InstanceBusy implements manager.Locks.
func (s *Store) InstanceBusy(ctx context.Context, cid, identity string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queues["i/"+cid+"/"+identity]) > 0, nil
}

type level struct {
	key  string
	mode lock.Mode
}

func levels(c lock.Chain) ([]level, error) {
	switch {
	case c.Challenge == "" && c.Instance != "":
		return nil, fmt.Errorf("%w: instance %q without challenge", lock.ErrChain, c.Instance)
	case c.Challenge == "":
		return nil, fmt.Errorf("%w: nothing to lock", lock.ErrChain)
	}
	lv := []level{{"c/" + c.Challenge, orRead(c.ChallengeMode)}}
	if c.Instance != "" {
		lv = append(lv, level{"i/" + c.Challenge + "/" + c.Instance, orRead(c.InstanceMode)})
	}
	return lv, nil
}

func orRead(m lock.Mode) lock.Mode {
	if m == lock.None {
		return lock.Read
	}
	return m
}

// enqueueAndWait puts h at the end of key's queue and waits until nothing
// before it conflicts, or ctx ends (then its place is given back).
func (s *Store) enqueueAndWait(ctx context.Context, h *Held, key string, mode lock.Mode) error {
	s.mu.Lock()
	s.queues[key] = append(s.queues[key], entry{mode, h})
	h.levels = append(h.levels, key)
	for !s.granted(h, key) {
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.dequeue(h, key)
			s.mu.Unlock()
			return fmt.Errorf("lock: wait at %s: %w", strings.SplitN(key, "/", 2)[0], ctx.Err())
		case <-ch:
		}
		s.mu.Lock()
	}
	s.mu.Unlock()
	return nil
}

// granted: no entry before h's at key conflicts with it. Called with s.mu.
func (s *Store) granted(h *Held, key string) bool {
	var mine lock.Mode
	for _, e := range s.queues[key] {
		if e.held == h {
			mine = e.mode
			break
		}
	}
	for _, e := range s.queues[key] {
		if e.held == h {
			return true
		}
		if mine == lock.Write || e.mode == lock.Write {
			return false
		}
	}
	return true
}

// dequeue removes h from key's queue and wakes the waiters. Called with s.mu.
func (s *Store) dequeue(h *Held, key string) {
	q := s.queues[key]
	for i, e := range q {
		if e.held == h {
			s.queues[key] = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(s.queues[key]) == 0 {
		delete(s.queues, key)
	}
	for i, k := range h.levels {
		if k == key {
			h.levels = append(h.levels[:i:i], h.levels[i+1:]...)
			break
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Release implements manager.Held: every level is freed, and the
// reservations made under h vanish with it (as with an etcd lease).
func (h *Held) Release(context.Context) error {
	h.release()
	return nil
}

func (h *Held) release() {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.lost {
		return
	}
	h.lost = true
	for _, k := range append([]string(nil), h.levels...) {
		s.dequeue(h, k)
	}
	s.dropReservations(h)
}

// ReleaseChallenge implements manager.Held.
func (h *Held) ReleaseChallenge(context.Context) error {
	s := h.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if h.lost {
		return lock.ErrReleased
	}
	for _, k := range append([]string(nil), h.levels...) {
		if strings.HasPrefix(k, "c/") {
			s.dequeue(h, k)
		}
	}
	return nil
}

// Expire is what a lost lease does to h: its locks and reservations are
// gone, and its writes are refused from now on (store.ErrFenced).
func (h *Held) Expire() { h.release() }
