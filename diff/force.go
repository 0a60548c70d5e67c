package diff

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// listed reports whether refs (an inventory) holds ref under any version:
// one object is served under every version of its kind.
func listed(refs []Ref, ref Ref) bool {
	for _, r := range refs {
		if r.Group == ref.Group && r.Kind == ref.Kind && r.Namespace == ref.Namespace && r.Name == ref.Name {
			return true
		}
	}
	return false
}

// ForceRecreates says what recreating live (refit.dev/force) deletes, for
// the plan: data is never lost without the plan saying so.
func ForceRecreates(live *unstructured.Unstructured) string {
	s := ForceAnnotation + " deletes it and creates it again"
	if live == nil {
		return s
	}
	gk := live.GroupVersionKind().GroupKind()
	switch {
	case gk.Group == "" && gk.Kind == "PersistentVolumeClaim":
		volume, _, _ := unstructured.NestedString(live.Object, "spec", "volumeName")
		if volume == "" {
			volume = "its volume"
		} else {
			volume = "PersistentVolume " + volume
		}
		return s + ": the claim's data is lost — " + volume + " is deleted with it when its reclaim policy is Delete (the default of dynamic provisioning)"
	case gk.Group == "apps" && gk.Kind == "StatefulSet":
		when, _, _ := unstructured.NestedString(live.Object, "spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted")
		if when == "Delete" {
			return s + ": its PersistentVolumeClaims and their data are deleted with it (persistentVolumeClaimRetentionPolicy.whenDeleted: Delete), and its Pods"
		}
		return s + ", with its Pods (its PersistentVolumeClaims are kept)"
	case IsWorkload(gk) || gk.Group == "batch":
		return s + ", with its Pods"
	}
	return s
}
