package main

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/reconcile"
)

// rolloutStatuses are the App status's view of the rollouts under way.
func rolloutStatuses(rs []reconcile.RolloutProgress) []v1alpha1.RolloutStatus {
	if len(rs) == 0 {
		return nil
	}
	out := make([]v1alpha1.RolloutStatus, 0, len(rs))
	for _, r := range rs {
		w := r.Workload
		st := v1alpha1.RolloutStatus{
			Workload: v1alpha1.ObjectRef{APIVersion: schema.GroupVersion{Group: w.Group, Version: w.Version}.String(),
				Kind: w.Kind, Namespace: w.Namespace, Name: w.Name},
			PodsDone: int32(r.Done), PodsTotal: int32(r.Total),
		}
		if !r.Started.IsZero() {
			// The API server keeps seconds: a finer time would differ from
			// what is read back, and make every write look like a change.
			t := metav1.NewTime(r.Started.Truncate(0).UTC().Truncate(1e9))
			st.StartedAt = &t
		}
		out = append(out, st)
	}
	return out
}
