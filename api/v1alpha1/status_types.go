package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AppStatus is what refit last did with an App. Its conditions follow
// kstatus: Reconciling while refit works on the App, Stalled when it waits
// for a new commit or for someone to act, Ready once the commit is applied
// and healthy; tools that read kstatus (Flux, Argo CD, kubectl wait) then
// see InProgress, Failed and Current.
type AppStatus struct {
	// ObservedGeneration is the generation of the spec the conditions
	// speak of.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// LastAttemptedRevision is the last revision refit tried to apply.
	// +optional
	LastAttemptedRevision string `json:"lastAttemptedRevision,omitempty"`

	// LastAppliedRevision is the last revision applied and healthy.
	// +optional
	LastAppliedRevision string `json:"lastAppliedRevision,omitempty"`

	// LastHandledReconcileAt is the value of the refit.dev/reconcile-at
	// annotation the last pass acted on.
	// +optional
	LastHandledReconcileAt string `json:"lastHandledReconcileAt,omitempty"`

	// Rollouts are the in-place rollouts in progress.
	// +listType=atomic
	// +optional
	Rollouts []RolloutStatus `json:"rollouts,omitempty"`

	// Inventory lists the objects the App applied, which it prunes.
	// +optional
	Inventory *Inventory `json:"inventory,omitempty"`
}

// RolloutStatus is one workload's in-place rollout.
type RolloutStatus struct {
	Workload ObjectRef `json:"workload"`
	// PodsDone is how many of the workload's Pods run the new template.
	PodsDone int32 `json:"podsDone"`
	// PodsTotal is how many Pods the rollout covers.
	PodsTotal int32 `json:"podsTotal"`
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
}

// Inventory is the set of objects an App applied.
type Inventory struct {
	// +listType=atomic
	Entries []ObjectRef `json:"entries"`
}

// ObjectRef names an object.
type ObjectRef struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}
