package reconcile

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
)

// TestShardedPassTakesSlotBeforeLock: sharded Apps sharing a pool of one
// slot hold at most one App lock at once (each lock is renewed while held:
// a lock waiting for a slot is load for nothing), and every App still
// syncs once.
func TestShardedPassTakesSlotBeforeLock(t *testing.T) {
	slots := newPool(1)
	var held, most atomic.Int32
	lock := func(ctx context.Context) (context.Context, func(), bool) {
		n := held.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		return ctx, func() { held.Add(-1) }, true
	}
	const apps = 4
	var wg sync.WaitGroup
	pipes := make([]*pipe, apps)
	for i := range apps {
		e := &env{remote: &remote{}, trigger: source.NewTrigger()}
		e.remote.set("c1", nil)
		p := &pipe{env: e, apply: func(ctx context.Context, e *env) (*Result, error) {
			time.Sleep(20 * time.Millisecond) // the others queue meanwhile
			return rollouts()(ctx, e)
		}}
		pipes[i] = p
		l := &appLoop{
			app: App{Name: "shop", Poller: e.remote, Trigger: e.trigger, Interval: time.Second, DriftInterval: time.Hour,
				Status: &statuses{}, Lock: lock},
			pipe: pooled{pipeline: p, pool: slots}, now: time.Now,
		}
		wg.Go(func() { l.pass(t.Context()) })
	}
	wg.Wait()
	if m := most.Load(); m != 1 {
		t.Errorf("%d App locks held at once with a pool of 1 slot; want 1 (slot first, then lock)", m)
	}
	for i, p := range pipes {
		if p.synced != 1 {
			t.Errorf("app %d synced %d times; want 1", i, p.synced)
		}
	}
}
