package reconcile

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/refit-gitops/refit/story"
)

// Controller finds apps while the service runs (the App objects of the
// cluster) and runs each with start until it is changed or removed.
type Controller interface {
	Run(ctx context.Context, start StartFunc)
}

// StartFunc runs app with rec (nil: the service's own Reconciler) until
// ctx ends, sharing the service's worker pool and story sink.
type StartFunc func(ctx context.Context, app App, rec *Reconciler)

func (r *Reconciler) starter(opts ServiceOptions, slots *pool) StartFunc {
	return func(ctx context.Context, app App, rec *Reconciler) {
		if rec == nil {
			rec = r
		}
		if opts.Story != nil {
			app.Options.Story = story.Sinks{app.Options.Story, opts.Story}
		}
		rec.runApp(ctx, app, pooled{pipeline: rec, pool: slots})
	}
}

// PruneAll deletes everything the app of opts applied, as a commit that
// renders nothing would (the App object was deleted).
func (r *Reconciler) PruneAll(ctx context.Context, opts Options) error {
	empty, err := os.MkdirTemp("", "refit-prune-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(empty)
	if err := os.WriteFile(filepath.Join(empty, "kustomization.yaml"), []byte("resources: []\n"), 0o600); err != nil {
		return err
	}
	opts.Path, opts.Prune, opts.AllowEmpty = ".", true, true
	plan, err := r.Plan(ctx, empty, opts)
	if err != nil {
		return fmt.Errorf("app %s: prune: %w", opts.App, err)
	}
	if _, err := r.Apply(ctx, plan, opts); err != nil {
		return fmt.Errorf("app %s: prune: %w", opts.App, err)
	}
	return r.Forget(ctx, opts)
}

// Forget deletes what refit keeps of the app of opts (its inventory and
// bad-commit memory): the App object is gone. A later app of that name
// starts afresh instead of claiming objects it never applied.
func (r *Reconciler) Forget(ctx context.Context, opts Options) error {
	if err := r.applier.Forget(ctx, opts.App); err != nil {
		return fmt.Errorf("app %s: %w", opts.App, err)
	}
	return nil
}
