package memstore_test

import (
	"testing"

	"github.com/challfn/challfn/shared/manager"
	"github.com/challfn/challfn/shared/memstore"
	"github.com/challfn/challfn/shared/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend {
		s := memstore.New()
		return storetest.Backend{Records: s, Locks: s, Expire: func(_ *testing.T, h manager.Held) { h.(*memstore.Held).Expire() }}
	})
}
