package inplace

import (
	"sort"

	"k8s.io/apimachinery/pkg/util/intstr"
)

// Rounding says how a percentage maxUnavailable becomes a Pod count; each
// workload controller rounds its own way, and refit follows it.
type Rounding bool

const (
	// RoundDown is the Deployment controller's rounding (ResolveFenceposts),
	// and the StatefulSet controller's, which then takes at least 1
	// (getStatefulSetMaxUnavailable).
	RoundDown Rounding = false
	// RoundUp is the DaemonSet controller's rounding.
	RoundUp Rounding = true
)

// ResolveMaxUnavailable turns a maxUnavailable value (nil means the
// controller's default, def) into a Pod count for replicas Pods.
func ResolveMaxUnavailable(v *intstr.IntOrString, def intstr.IntOrString, replicas int, round Rounding) (int, error) {
	if v == nil {
		v = &def
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, replicas, bool(round))
	if err != nil {
		return 0, err
	}
	if n < 0 {
		n = 0
	}
	return n, nil
}

// Candidate is what the batch decision needs to know of one Pod.
type Candidate struct {
	Name string
	// Ordinal is the StatefulSet ordinal, or -1.
	Ordinal int
	// Done: the Pod runs the target images (patched and restarted, or
	// created from the new template).
	Done bool
	// InProgress: patched, the restart not finished yet.
	InProgress bool
	// Available: Ready (for minReadySeconds).
	Available bool
}

// SelectBatch chooses the Pods to patch now, as a sliding window: budget is
// what is left of maxUnavailable once every Pod unavailable for any reason
// is counted (also Pods the rollout may not touch, and Pods the workload
// lacks). A Pod that is already unavailable on the old images may be patched
// without spending budget: it takes nothing more down. Free ones go first,
// then StatefulSet Pods from the highest ordinal down, as the StatefulSet
// controller updates them; other Pods by name. It is a pure function.
func SelectBatch(pods []Candidate, budget int) []string {
	var old []Candidate
	for _, p := range pods {
		if !p.Done && !p.InProgress {
			old = append(old, p)
		}
	}
	sort.SliceStable(old, func(i, j int) bool {
		a, b := old[i], old[j]
		if a.Available != b.Available {
			return !a.Available // free ones first
		}
		if a.Ordinal != b.Ordinal {
			return a.Ordinal > b.Ordinal
		}
		return a.Name < b.Name
	})
	var out []string
	for _, p := range old {
		if !p.Available {
			out = append(out, p.Name)
			continue
		}
		if budget <= 0 {
			break
		}
		budget--
		out = append(out, p.Name)
	}
	return out
}
