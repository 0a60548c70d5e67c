package reconcile

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/source"
)

// ctxObserver records the passes it could write: like the API client, a
// write under a done context fails.
type ctxObserver struct {
	mu     sync.Mutex
	phases []Phase
}

func (o *ctxObserver) Observe(ctx context.Context, p Pass) {
	if ctx.Err() != nil {
		return // "app status not written: context canceled"
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.phases = append(o.phases, p.Phase)
}

// losableLoop is an App loop on e and p whose lock's context *lose cancels:
// a lock lost mid-sync.
func losableLoop(e *env, p pipeline, obs Observer, lose *context.CancelFunc) *appLoop {
	return &appLoop{
		app: App{Name: "shop", Poller: e.remote, Trigger: e.trigger, Interval: time.Second, DriftInterval: time.Hour, Status: &statuses{}, Observer: obs,
			Lock: func(ctx context.Context) (context.Context, func(), bool) {
				var lctx context.Context
				lctx, *lose = context.WithCancel(ctx)
				return lctx, func() { (*lose)() }, true
			}},
		pipe: p, now: time.Now,
	}
}

// A sharded App whose lock is lost just as its sync succeeds (a renewal
// missed its deadline on a loaded API server) must still end Ready: the
// success's status write fails under the lost lock's context, and a later
// pass must write it (or sync again), not count the commit applied and
// leave the App Reconciling until the next commit or drift pass.
func TestLockLostAtSuccessStatusWritten(t *testing.T) {
	e := &env{remote: &remote{}, trigger: source.NewTrigger()}
	p := &pipe{env: e}
	obs := &ctxObserver{}
	var lose context.CancelFunc
	l := losableLoop(e, p, obs, &lose)
	e.remote.set("c1", nil)
	p.apply = func(ctx context.Context, _ *env) (*Result, error) {
		res, err := rollouts()(ctx, nil)
		if p.synced == 1 {
			lose() // the lock is lost after the apply, before the status write
		}
		return res, err
	}
	for range 3 {
		l.pass(t.Context())
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if n := len(obs.phases); n == 0 || obs.phases[n-1] != PhaseSuccess {
		t.Errorf("status writes %v after the lock was lost at success; want the last one %s", obs.phases, PhaseSuccess)
	}
}

// losePlan is a pipe whose first plan fails with err after losing the lock.
type losePlan struct {
	*pipe
	lose *context.CancelFunc
	err  error
}

func (p losePlan) Plan(ctx context.Context, root string, opts Options) (*diff.Plan, error) {
	if p.synced++; p.synced == 1 {
		(*p.lose)()
	}
	return nil, p.err
}

// A bad commit whose lock is lost before its failure status is written is
// reported again by the next pass, from the memory, and not synced again.
func TestLockLostAtBadCommitReportedAgain(t *testing.T) {
	e := &env{remote: &remote{}, trigger: source.NewTrigger()}
	obs := &ctxObserver{}
	var lose context.CancelFunc
	p := losePlan{pipe: &pipe{env: e}, lose: &lose, err: &BadCommitError{Err: errors.New("bad indentation")}}
	l := losableLoop(e, p, obs, &lose)
	e.remote.set("c1", nil)
	for range 3 {
		l.pass(t.Context())
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if n := len(obs.phases); n == 0 || obs.phases[n-1] != PhaseBadCommit {
		t.Errorf("status writes %v after the lock was lost at a bad commit; want the last one %s", obs.phases, PhaseBadCommit)
	}
	if p.synced != 1 {
		t.Errorf("the bad commit was planned %d times; want once", p.synced)
	}
}
