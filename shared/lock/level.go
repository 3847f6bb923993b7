package lock

import (
	"errors"
	"fmt"
	"net/url"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Mode of a level in a chain.
type Mode int

const (
	None  Mode = iota // level not taken
	Read              // shared
	Write             // exclusive
)

func (m Mode) String() string {
	switch m {
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return "none"
}

// Errors.
var (
	ErrLocked    = errors.New("lock: already locked")
	ErrLeaseLost = errors.New("lock: lease lost")
	ErrReleased  = errors.New("lock: already released")
	ErrChain     = errors.New("lock: invalid chain")
)

// Chain names the levels an operation locks (docs/contract.md §6.2): a
// challenge, and optionally one of its instances. A level given with mode
// None is taken in Read mode.
type Chain struct {
	Challenge     string
	ChallengeMode Mode
	Instance      string // identity (or a name such as the pool's); needs Challenge
	InstanceMode  Mode
}

type level struct {
	name string // challenge, instance, singleton
	dir  string // ends with /
	mode Mode
}

func (lv level) key(lease clientv3.LeaseID) string {
	m := "r/"
	if lv.mode == Write {
		m = "w/"
	}
	return fmt.Sprintf("%s%s%016x", lv.dir, m, int64(lease))
}

// conflicts is the range of keys this level's request must wait for.
func (lv level) conflicts() string {
	if lv.mode == Write {
		return lv.dir
	}
	return lv.dir + "w/"
}

func (lv level) free() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(lv.conflicts()), "=", 0).WithPrefix()
}

func seg(s string) string { return url.PathEscape(s) }

func (l *Locker) challenge(id string, m Mode) level {
	return level{"challenge", l.dir + "c/" + seg(id) + "/", orRead(m)}
}

func (l *Locker) instance(id, identity string, m Mode) level {
	return level{"instance", l.dir + "i/" + seg(id) + "/" + seg(identity) + "/", orRead(m)}
}

func orRead(m Mode) Mode {
	if m == None {
		return Read
	}
	return m
}

func (l *Locker) levels(c Chain) ([]level, error) {
	switch {
	case c.Challenge == "" && c.Instance != "":
		return nil, fmt.Errorf("%w: instance %q without challenge", ErrChain, c.Instance)
	case c.Challenge == "":
		return nil, fmt.Errorf("%w: nothing to lock", ErrChain)
	}
	lv := []level{l.challenge(c.Challenge, c.ChallengeMode)}
	if c.Instance != "" {
		lv = append(lv, l.instance(c.Challenge, c.Instance, c.InstanceMode))
	}
	return lv, nil
}
