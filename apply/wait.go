package apply

import (
	"context"

	"github.com/go-logr/logr"

	"github.com/refit-gitops/refit/diff"
)

// WaitHealthy is the health wait of Apply with Options.Wait, on its own: it
// waits until the objects of res (what Apply without Wait returned for plan)
// that were written or left unchanged are healthy, and records the outcome
// in res (Health, and each object's Status and Message). A caller can so
// start other work right after the writes (the in-place rollouts) and wait
// for health at the same time. Errors are those of Apply's health wait: a
// *HealthError when something is not healthy.
func (a *Applier) WaitHealthy(ctx context.Context, plan *diff.Plan, res *Result, opts Options) error {
	if err := opts.check(); err != nil {
		return err
	}
	r := &run{a: a, opts: opts, log: logr.FromContextOrDiscard(ctx), progress: progress{fn: opts.Progress}, ttlJobs: jobsWithTTL(plan)}
	r.result = *res
	err := r.waitHealthy(ctx)
	*res = r.result
	return err
}
