package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
)

// A sharded App syncs only under its lock: while another replica holds
// it, the pass writes nothing and polls again soon; once taken, the sync
// runs under the lock's context and releases it after.
func TestPassUnderLock(t *testing.T) {
	e := &env{remote: &remote{}, trigger: source.NewTrigger()}
	p := &pipe{env: e}
	st := &statuses{}
	free, held, released := false, false, 0
	lockCtx, lose := context.WithCancel(t.Context())
	defer lose()
	l := &appLoop{
		app: App{Name: "shop", Poller: e.remote, Trigger: e.trigger, Interval: time.Minute, DriftInterval: 10 * time.Minute, Status: st,
			Lock: func(context.Context) (context.Context, func(), bool) {
				if !free {
					return nil, nil, false
				}
				held = true
				return lockCtx, func() { held = false; released++ }, true
			}},
		pipe: p, now: time.Now,
	}
	e.remote.set("c1", nil)
	if wait := l.pass(t.Context()); wait != lockRetry || p.synced != 0 {
		t.Fatalf("lock held elsewhere: next poll in %s, %d syncs; want %s, none", wait, p.synced, lockRetry)
	}
	if got, _ := st.take(); len(got) != 0 {
		t.Fatalf("lock held elsewhere: reported %q, want nothing", got)
	}
	free = true
	var sawCtx context.Context
	p.apply = func(ctx context.Context, _ *env) (*Result, error) {
		sawCtx = ctx
		if !held {
			t.Error("sync ran without the lock")
		}
		return rollouts()(ctx, nil)
	}
	if wait := l.pass(t.Context()); wait != time.Minute || p.synced != 1 || released != 1 || held {
		t.Fatalf("lock taken: next poll in %s, %d syncs, released %d times, held after %v; want 1m, 1, 1, false", wait, p.synced, released, held)
	}
	lose()
	if sawCtx == nil || sawCtx.Err() == nil {
		t.Error("the sync's context does not end with the lock's")
	}
}
