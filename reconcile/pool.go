package reconcile

import (
	"context"
	"sync"

	"github.com/refit-gitops/refit/diff"
)

// DefaultConcurrent is how many apps sync at once unless set: enough to
// keep a thousand small apps moving, few enough that their requests stay
// within what the API server's priority and fairness admits for one
// client (the global-default level shares a few dozen seats) and their
// rendered objects within memory.
const DefaultConcurrent = 20

// pool bounds how many apps plan or apply at once: a thousand apps on one
// new commit would otherwise render, dry-run and apply all together.
type pool struct{ slots chan struct{} }

func newPool(n int) *pool {
	if n <= 0 {
		n = DefaultConcurrent
	}
	return &pool{slots: make(chan struct{}, n)}
}

func (p *pool) acquire(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *pool) release() { <-p.slots }

// pooled is a pipeline whose Plan and Apply each take a slot of the pool.
// Apply gives it back once its writes are done: a health wait or an
// in-place rollout waits on the cluster, not on refit, and holding slots
// through them would let a few slow apps stall a thousand quick ones.
type pooled struct {
	pipeline
	pool *pool
}

func (p pooled) Plan(ctx context.Context, root string, opts Options) (*diff.Plan, error) {
	if err := p.pool.acquire(ctx); err != nil {
		return nil, err
	}
	defer p.pool.release()
	return p.pipeline.Plan(ctx, root, opts)
}

func (p pooled) Apply(ctx context.Context, plan *diff.Plan, opts Options) (*Result, error) {
	if err := p.pool.acquire(ctx); err != nil {
		return nil, err
	}
	var once sync.Once
	release := func() { once.Do(p.pool.release) }
	defer release()
	opts.writesDone = release
	return p.pipeline.Apply(ctx, plan, opts)
}

// planApplier plans and applies one revision as one piece of work
// (pooled).
type planApplier interface {
	planApply(ctx context.Context, root string, opts Options, begin func(), planned func(*diff.Plan)) (*Result, error)
}

var _ planApplier = pooled{}

// planApply plans and applies under one slot, held from the plan until
// the apply's writes are done. Taken twice, a slot for the plan and
// another for the apply, the pool's queue (first come, first served) made
// every app plan before any applied: at cold start a thousand plans,
// their rendered, live and dry-run objects, all held in memory at once,
// each waiting behind all the others' plans.
func (p pooled) planApply(ctx context.Context, root string, opts Options, begin func(), planned func(*diff.Plan)) (*Result, error) {
	if err := p.pool.acquire(ctx); err != nil {
		return nil, err
	}
	var once sync.Once
	release := func() { once.Do(p.pool.release) }
	defer release()
	begin()
	plan, err := p.pipeline.Plan(ctx, root, opts)
	if err != nil {
		return nil, err
	}
	planned(plan)
	opts.writesDone = release
	return p.pipeline.Apply(ctx, plan, opts)
}

// planAndApply plans and applies one revision with pipe, calling begin
// when the work starts (with a pool, once it has a slot) and planned with
// the plan before it is applied.
func planAndApply(ctx context.Context, pipe pipeline, root string, opts Options, begin func(), planned func(*diff.Plan)) (*Result, error) {
	if pa, ok := pipe.(planApplier); ok {
		return pa.planApply(ctx, root, opts, begin, planned)
	}
	begin()
	plan, err := pipe.Plan(ctx, root, opts)
	if err != nil {
		return nil, err
	}
	planned(plan)
	return pipe.Apply(ctx, plan, opts)
}
