package inplace

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/refit-gitops/refit/diff"
)

// rollback puts a failed rollout's Pods back on the images the workload ran
// before it (rec.Origin) and the workload's template with them, as a
// rollout like any other: the same bound, PDBs and gate drain, with the
// controller held until every Pod is back, then released on the old
// template. The record keeps Failed (the revision that failed) while it
// runs, so a refit stopped in the middle goes on with the rollback, not
// with the failed images. res keeps the Failed outcome of the rollout.
func (e *Engine) rollback(ctx context.Context, change diff.Change, rec rolloutRecord, opts Options, res *Result) error {
	if len(rec.Origin) == 0 {
		res.Reason += "; no rollback: the images before the rollout are unknown"
		return nil
	}
	desired, err := withImages(change.Desired, rec.Origin)
	if err != nil {
		return fmt.Errorf("%s: rollback: %w", change.Ref, err)
	}
	// The workload remembers which images failed, so that no refit (also one
	// restarted, or a new leader) tries them again on its own.
	note, err := json.Marshal(rolledBackNote{Revision: rec.Failed, At: e.now().UTC().Truncate(time.Second), Reason: truncate(res.Reason, 512)})
	if err != nil {
		return err
	}
	if change.Ref.Kind != "Pod" {
		desired = withAnnotation(desired, RolledBackAnnotation, string(note))
	}
	backChange := change
	backChange.Desired = desired
	target := targetFromImages(rec.Origin)
	w, target, fallback, err := e.check(ctx, backChange, target)
	if err != nil {
		return fmt.Errorf("%s: rollback: %w", change.Ref, err)
	}
	if fallback != "" {
		res.Reason += "; no rollback: " + fallback
		return nil
	}
	r := w.record()
	r.ID, r.Failed, r.Origin = rec.ID, rec.Failed, rec.Origin
	if err := w.prepare(ctx); err != nil {
		return fmt.Errorf("%s: rollback: %w", change.Ref, err)
	}
	var back Result
	back.Ref = change.Ref
	run := newRun(e, w, backChange, target, opts, &back)
	rolledBack := 0
	progress := opts.Progress
	run.opts.Progress = func(p Progress) {
		if !p.Start {
			rolledBack += len(p.Patched)
		}
		if progress != nil {
			p.RollingBack = true
			progress(p)
		}
	}
	err = run.loop(ctx)
	res.RolledBack = rolledBack
	if back.MaxObserved > res.MaxObserved {
		res.MaxObserved = back.MaxObserved
	}
	if err != nil {
		return fmt.Errorf("%s: rollback: %w", change.Ref, err)
	}
	if back.Outcome != Succeeded {
		res.Reason += fmt.Sprintf("; rollback failed at Pod %s: %s", back.FailedPod, back.Reason)
	}
	res.RollbackComplete = back.Outcome == Succeeded
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
