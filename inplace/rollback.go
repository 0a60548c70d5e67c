package inplace

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/refit-gitops/refit/diff"
)

// rollback puts a failed rollout's Pods back on the images the workload ran
// before it (rec.Origin), the resources and template labels and annotations
// too where the record kept them, and the workload's template with them, as a
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
	desired, removed, err := rollbackDesired(change.Desired, rec)
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
	backChange.Desired, backChange.Metadata = desired, removed
	target, err := rollbackTarget(backChange, rec)
	if err != nil {
		return fmt.Errorf("%s: rollback: %w", change.Ref, err)
	}
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
	r.OriginResources, r.OriginMetadata = rec.OriginResources, rec.OriginMetadata
	r.RemoveLabels, r.RemoveAnnotations = target.RemoveLabels, target.RemoveAnnotations
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

// rollbackDesired is the failed desired object with the template as the
// record says it was before the rollout: its images, and where the record
// kept them, its containers' resources and its labels and annotations. It
// also returns the template keys to take off the Pods again (those the
// failed template set and the old one did not). It is a pure function.
func rollbackDesired(failed *unstructured.Unstructured, rec rolloutRecord) (*unstructured.Unstructured, []diff.MetadataChange, error) {
	out, err := withImages(failed, rec.Origin)
	if err != nil {
		return nil, nil, err
	}
	path := []string{"spec", "template"}
	if out.GetKind() == "Pod" {
		return out, nil, nil // a bare Pod's record keeps its images only
	}
	if rec.OriginResources != nil {
		items, _, _ := unstructured.NestedSlice(out.Object, append(path, "spec", "containers")...)
		for _, item := range items {
			c, _ := item.(map[string]any)
			name, _ := c["name"].(string)
			res, ok := rec.OriginResources[name]
			if !ok {
				continue
			}
			raw, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&res)
			if err != nil {
				return nil, nil, fmt.Errorf("container %s: resources: %w", name, err)
			}
			if len(raw) == 0 {
				delete(c, "resources")
			} else {
				c["resources"] = raw
			}
		}
		if err := unstructured.SetNestedSlice(out.Object, items, append(path, "spec", "containers")...); err != nil {
			return nil, nil, err
		}
	}
	if rec.OriginMetadata == nil {
		return out, nil, nil
	}
	var removed []diff.MetadataChange
	for _, m := range []struct {
		kind, field string
		origin      map[string]string
	}{
		{"label", "labels", rec.OriginMetadata.Labels},
		{"annotation", "annotations", rec.OriginMetadata.Annotations},
	} {
		failedKeys, _, _ := unstructured.NestedStringMap(out.Object, append(path, "metadata", m.field)...)
		for _, k := range slices.Sorted(maps.Keys(failedKeys)) {
			if _, kept := m.origin[k]; !kept {
				removed = append(removed, diff.MetadataChange{Kind: m.kind, Key: k, From: failedKeys[k], Removed: true})
			}
		}
		if len(m.origin) == 0 {
			unstructured.RemoveNestedField(out.Object, append(path, "metadata", m.field)...)
			continue
		}
		if err := unstructured.SetNestedStringMap(out.Object, m.origin, append(path, "metadata", m.field)...); err != nil {
			return nil, nil, err
		}
	}
	return out, removed, nil
}

// rollbackTarget is the target of a rollback to back.Desired: what
// rollbackDesired restored, and only that (what the record does not know
// stays as the failed rollout left it).
func rollbackTarget(back diff.Change, rec rolloutRecord) (Target, error) {
	t, err := targetOf(back)
	if err != nil {
		return t, err
	}
	if rec.OriginResources == nil || back.Desired.GetKind() == "Pod" {
		t.Resources = nil
	}
	if rec.OriginMetadata == nil || back.Desired.GetKind() == "Pod" {
		t.Labels, t.Annotations, t.RemoveLabels, t.RemoveAnnotations = nil, nil, nil, nil
	}
	return t, nil
}
