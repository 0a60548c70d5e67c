package reconcile

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refit-gitops/refit/diff"
)

// busyPipe counts how many plans and applies run at once; an apply
// calls writesDone and then waits (a health wait) until released.
type busyPipe struct {
	now, most atomic.Int32
	waiting   sync.WaitGroup
	release   chan struct{}
}

func (p *busyPipe) enter() func() {
	n := p.now.Add(1)
	for {
		m := p.most.Load()
		if n <= m || p.most.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(5 * time.Millisecond) // the work, so that calls overlap
	return func() { p.now.Add(-1) }
}

func (p *busyPipe) Plan(context.Context, string, Options) (*diff.Plan, error) {
	defer p.enter()()
	return &diff.Plan{}, nil
}

func (p *busyPipe) Apply(_ context.Context, _ *diff.Plan, opts Options) (*Result, error) {
	leave := p.enter()
	leave()
	if opts.writesDone != nil {
		opts.writesDone()
	}
	p.waiting.Done()
	<-p.release // the health wait: holds no slot
	return &Result{}, nil
}

// TestPoolBoundsSyncs runs 40 syncs through a pool of 4: never more than 4
// plans or applies at once, and every apply reaches its health wait
// although all of them wait there together.
func TestPoolBoundsSyncs(t *testing.T) {
	pipe := &busyPipe{release: make(chan struct{})}
	p := pooled{pipeline: pipe, pool: newPool(4)}
	const syncs = 40
	pipe.waiting.Add(syncs)
	var wg sync.WaitGroup
	for range syncs {
		wg.Go(func() {
			plan, err := p.Plan(t.Context(), "", Options{})
			if err == nil {
				_, err = p.Apply(t.Context(), plan, Options{})
			}
			if err != nil {
				t.Error(err)
			}
		})
	}
	waited := make(chan struct{})
	go func() { pipe.waiting.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("applies waiting on health held their slots: the others never got one")
	}
	close(pipe.release)
	wg.Wait()
	if most := pipe.most.Load(); most > 4 || most < 2 {
		t.Errorf("at most %d syncs worked at once; want between 2 and the pool's 4", most)
	}
}

// TestPoolGivesUpOnCancel: a sync waiting for a slot ends with its context.
func TestPoolGivesUpOnCancel(t *testing.T) {
	pl := newPool(1)
	if err := pl.acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := (pooled{pipeline: &busyPipe{}, pool: pl}).Plan(ctx, "", Options{}); err == nil {
		t.Error("plan got a slot the pool did not have")
	}
}

// seqPipe records the order of plans and applies.
type seqPipe struct {
	mu  sync.Mutex
	seq []string
}

func (p *seqPipe) note(s string) {
	p.mu.Lock()
	p.seq = append(p.seq, s)
	p.mu.Unlock()
}

func (p *seqPipe) Plan(_ context.Context, root string, _ Options) (*diff.Plan, error) {
	p.note("plan " + root)
	time.Sleep(20 * time.Millisecond) // the others queue for the slot meanwhile
	return &diff.Plan{}, nil
}

func (p *seqPipe) Apply(_ context.Context, _ *diff.Plan, opts Options) (*Result, error) {
	p.note("apply " + opts.App)
	opts.writesDone()
	return &Result{}, nil
}

// TestPoolPlanThenApplyOneSlot: an app starts (its first writes), plans
// and applies before another app starts, so a pool of n holds at most n
// plans (with a slot for each of the plan and the apply, every queued app
// planned first) and bounds the starts' writes.
func TestPoolPlanThenApplyOneSlot(t *testing.T) {
	pipe := &seqPipe{}
	p := pooled{pipeline: pipe, pool: newPool(1)}
	var wg sync.WaitGroup
	for _, app := range []string{"a", "b", "c"} {
		wg.Go(func() {
			if _, err := planAndApply(t.Context(), p, app, Options{App: app}, func() { pipe.note("begin " + app) }, func(*diff.Plan) {}); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(5 * time.Millisecond) // a first, then b and c queue
	}
	wg.Wait()
	for i := 0; i < len(pipe.seq); i += 3 {
		begin, plan, apply := pipe.seq[i], pipe.seq[i+1], pipe.seq[i+2]
		app := begin[len("begin "):]
		if plan != "plan "+app || apply != "apply "+app {
			t.Fatalf("order %q: another app began or planned between an app's start (its first writes), plan and apply", pipe.seq)
		}
	}
}
