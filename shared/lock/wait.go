package lock

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// predecessorOp reads the latest keys of lv's conflict range; with the put
// of the same transaction it tells the waiter whom to wait for.
func predecessorOp(lv level) clientv3.Op {
	return clientv3.OpGet(lv.conflicts(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))
}

func predecessor(r *etcdserverpb.RangeResponse, rev int64) *mvccpb.KeyValue {
	if r == nil {
		return nil
	}
	for _, kv := range r.Kvs {
		if kv.CreateRevision < rev {
			return kv
		}
	}
	return nil
}

// wait blocks until no key conflicting with lv created before rev remains.
func (h *Held) wait(ctx context.Context, lv level, rev int64, pred *mvccpb.KeyValue) error {
	if pred == nil {
		return nil
	}
	ctx, end := h.l.span(ctx, WaitName(lv.name, lv.mode))
	defer end()
	seen := pred.ModRevision
	for pred != nil {
		if err := h.waitDeleted(ctx, lv, string(pred.Key), seen); err != nil {
			return err
		}
		resp, err := h.l.cli.Get(ctx, lv.conflicts(), clientv3.WithPrefix(), clientv3.WithMaxCreateRev(rev-1),
			clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), err)
		}
		pred = nil
		if len(resp.Kvs) > 0 {
			pred, seen = resp.Kvs[0], resp.Header.Revision
		}
	}
	return nil
}

// waitDeleted returns once key is deleted after revision after.
func (h *Held) waitDeleted(ctx context.Context, lv level, key string, after int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := h.l.cli.Watch(wctx, key, clientv3.WithRev(after+1), clientv3.WithFilterPut())
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ctx.Err())
		case <-h.done:
			if ctx.Err() != nil { // the keep-alive ends with ctx too
				return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ctx.Err())
			}
			return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ErrLeaseLost)
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), ctx.Err())
				}
				return fmt.Errorf("lock: %s: watch closed", WaitName(lv.name, lv.mode))
			}
			if wr.CompactRevision != 0 {
				return nil // history gone: the caller looks again
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("lock: %s: %w", WaitName(lv.name, lv.mode), err)
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return nil
				}
			}
		}
	}
}
