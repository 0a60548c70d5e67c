package inplace

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
)

// For returns an Engine that makes every request through cfg (an app's own
// identity, impersonated) and shares e's bookkeeping: the Pods being
// updated, which every gate keeper leaves alone, and the per-namespace PDB
// decisions, so that rollouts of apps with different identities under one
// PodDisruptionBudget still cannot both spend its last allowance.
func (e *Engine) For(cfg *rest.Config) (*Engine, error) {
	n, err := New(cfg)
	if err != nil {
		return nil, err
	}
	n.busy, n.pdbLocks, n.pulling = e.busy, e.pdbLocks, e.pulling
	return n, nil
}

// HasGate reports whether a workload (or bare Pod) lists refit's readiness
// gate: refit then writes its Pods' status (pods/status), which an app's own
// identity must be allowed.
func HasGate(obj *unstructured.Unstructured) bool { return hasGate(obj) }
