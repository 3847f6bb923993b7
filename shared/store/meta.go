package store

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Identities returns every identity that has a record or a pending marker
// (a stack being created), read at one revision: a stack whose identity is
// not in it is leaked.
func (s *Store) Identities(ctx context.Context) (map[string]bool, error) {
	inst, pend := s.p+"inst/", s.p+"pending/"
	resp, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(inst, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(pend, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("store: identities: %w", err)
	}
	ids := map[string]bool{}
	for r, dir := range []string{inst, pend} {
		for _, kv := range resp.Responses[r].GetResponseRange().Kvs {
			// <dir><challenge>/<identity>
			if _, id, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), dir), "/"); ok {
				ids[unseg(id)] = true
			}
		}
	}
	return ids, nil
}

func (s *Store) metaKey(name string) string { return s.p + "meta/" + seg(name) }

// GetMeta reads a small piece of bookkeeping (e.g. the janitor's orphan
// suspects); nil when absent.
func (s *Store) GetMeta(ctx context.Context, name string) ([]byte, error) {
	resp, err := s.cli.Get(ctx, s.metaKey(name))
	if err != nil {
		return nil, fmt.Errorf("store: get meta %s: %w", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	return resp.Kvs[0].Value, nil
}

// PutMeta writes a piece of bookkeeping (last writer wins).
func (s *Store) PutMeta(ctx context.Context, name string, value []byte) error {
	if _, err := s.cli.Put(ctx, s.metaKey(name), string(value)); err != nil {
		return fmt.Errorf("store: put meta %s: %w", name, err)
	}
	return nil
}
