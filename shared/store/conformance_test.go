package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/challfn/challfn/shared/etcd"
	"github.com/challfn/challfn/shared/etcd/etcdtest"
	"github.com/challfn/challfn/shared/lock"
	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/store"
	"github.com/challfn/challfn/shared/storetest"
)

// TestConformance: the records and locks in etcd pass the suite the manager's
// rules rely on (shared/memstore passes it too).
func TestConformance(t *testing.T) {
	srv := etcdtest.Server(t)
	n := 0
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		n++
		cli := etcdtest.Client(t, srv, etcd.Config{})
		prefix := "/conf" + time.Now().Format("150405.000000") + string(rune('a'+n%26))
		records, locks := manager.OnEtcd(store.New(cli, prefix), lock.New(cli, lock.Options{Prefix: prefix, TTL: time.Second}))
		return storetest.Backend{Records: records, Locks: locks, Expire: func(t *testing.T, h manager.Held) {
			// What a lost lease does: every key of the chain is gone.
			if _, err := cli.Revoke(context.Background(), h.(*lock.Held).Lease()); err != nil {
				t.Fatal(err)
			}
		}}
	})
}
