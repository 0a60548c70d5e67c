package inplace

import (
	"maps"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/diff"
)

// Template labels and annotations go onto the live Pods with the same
// patch as the images: metadata changes restart nothing, and the selector's
// labels never change (the plan makes that structural).

// metadataOf reads the labels and annotations the Pods should carry: the
// template's (a bare Pod's own), and the keys the plan saw removed from it.
func metadataOf(change diff.Change) (labels, annotations map[string]string, removeLabels, removeAnnotations []string) {
	path := []string{"spec", "template", "metadata"}
	if change.Desired.GetKind() == "Pod" {
		path = []string{"metadata"}
	}
	labels, _, _ = unstructured.NestedStringMap(change.Desired.Object, append(path, "labels")...)
	annotations, _, _ = unstructured.NestedStringMap(change.Desired.Object, append(path, "annotations")...)
	for _, m := range change.Metadata {
		if !m.Removed {
			continue
		}
		if m.Kind == "label" {
			removeLabels = append(removeLabels, m.Key)
		} else {
			removeAnnotations = append(removeAnnotations, m.Key)
		}
	}
	sort.Strings(removeLabels)
	sort.Strings(removeAnnotations)
	return labels, annotations, removeLabels, removeAnnotations
}

// withRevisionLabels is a copy of labels with the workload controller's
// revision labels over them.
func withRevisionLabels(labels, revision map[string]string) map[string]string {
	if len(revision) == 0 {
		return labels
	}
	out := make(map[string]string, len(labels)+len(revision))
	maps.Copy(out, labels)
	maps.Copy(out, revision)
	return out
}

// metadataLines are the target's labels and annotations as sorted lines
// (for the revision hash).
func metadataLines(t Target) []string {
	var out []string
	for k, v := range t.Labels {
		out = append(out, "label/"+k+"="+v)
	}
	for k, v := range t.Annotations {
		out = append(out, "annotation/"+k+"="+v)
	}
	for _, k := range t.RemoveLabels {
		out = append(out, "label-/"+k)
	}
	for _, k := range t.RemoveAnnotations {
		out = append(out, "annotation-/"+k)
	}
	sort.Strings(out)
	return out
}

// metadataAtTarget reports whether the Pod carries the target's labels and
// annotations and none of the removed ones.
func (t Target) metadataAtTarget(pod *corev1.Pod) bool {
	return mapAtTarget(pod.Labels, t.Labels, t.RemoveLabels) && mapAtTarget(pod.Annotations, t.Annotations, t.RemoveAnnotations)
}

func mapAtTarget(have, want map[string]string, remove []string) bool {
	for k, v := range want {
		if cur, ok := have[k]; !ok || cur != v {
			return false
		}
	}
	for _, k := range remove {
		if _, ok := have[k]; ok {
			return false
		}
	}
	return true
}

// metadataChanges are the entries of want that have differs in, merged
// over extra (refit's own labels and state, which win).
func metadataChanges(have, want, extra map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range want {
		if cur, ok := have[k]; !ok || cur != v {
			out[k] = v
		}
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// removeOps remove the keys of a string map at path that the Pod has. A
// key another writer removed meanwhile fails the patch, and the next pass
// sees the Pod as it is.
func removeOps(path string, have map[string]string, keys []string) []jsonPatchOp {
	var ops []jsonPatchOp
	for _, k := range keys {
		if _, ok := have[k]; ok {
			ops = append(ops, jsonPatchOp{Op: "remove", Path: path + "/" + escapePointer(k)})
		}
	}
	return ops
}

// admittedMetadata is the target's labels or annotations as admission left
// them on the dry-run of the patch: a webhook that rewrites or drops one
// would otherwise leave a Pod that never reaches the target.
func admittedMetadata(want, admitted map[string]string) map[string]string {
	if want == nil {
		return nil
	}
	out := map[string]string{}
	for k := range want {
		if v, ok := admitted[k]; ok {
			out[k] = v
		}
	}
	return out
}

// rememberRemovals keeps the keys a rollout removes from its Pods in its
// record, and gives the target those the record kept: a refit that resumes
// the rollout after the template was written no longer sees them in the
// plan. A key the target sets again is no longer removed.
func rememberRemovals(rec *rolloutRecord, t Target) Target {
	rec.RemoveLabels = mergeKeys(rec.RemoveLabels, t.RemoveLabels, t.Labels)
	rec.RemoveAnnotations = mergeKeys(rec.RemoveAnnotations, t.RemoveAnnotations, t.Annotations)
	t.RemoveLabels, t.RemoveAnnotations = rec.RemoveLabels, rec.RemoveAnnotations
	return t
}

// mergeKeys is the sorted union of a and b without the keys set has.
func mergeKeys(a, b []string, set map[string]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range append(append([]string{}, a...), b...) {
		if _, kept := set[k]; kept || seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
