// Package identity generates the identities of challenge instances.
//
// An identity names an instance everywhere: its Pulumi stack, its records in
// etcd and the `identity` config value the scenario sees. It is derived from
// random bytes only, never from the source (player/team) ID, so a scenario can
// not learn who it is deployed for (docs/design.md, decision 10).
package identity

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
)

// Len is the length of an identity: 16 lowercase hex characters, as upstream.
const Len = 16

// New returns a fresh identity: the first 16 hex characters of the SHA-256 of
// 16 random bytes (docs/contract.md §4.13).
func New() string {
	var seed [16]byte
	// crypto/rand.Read never returns an error on supported platforms (Go 1.24+).
	_, _ = rand.Read(seed[:])
	sum := sha256.Sum256(seed[:])
	return hex.EncodeToString(sum[:])[:Len]
}

// Valid reports whether s has the shape of an identity.
func Valid(s string) bool {
	if len(s) != Len {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
