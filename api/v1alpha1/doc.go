// Package v1alpha1 is refit's App API (group refit.dev): the App kind as
// Go types with the markers controller-gen turns into the CRD in
// deploy/crds, and the pure function that writes an App's status from
// what one pass over it found. It neither reads nor writes a cluster.
//
// +kubebuilder:object:generate=true
// +groupName=refit.dev
package v1alpha1

// The CRD and the deep copies are generated; TestGeneratedUpToDate fails
// when they are stale.
//go:generate go run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object paths=. crd paths=. output:crd:dir=../../deploy/crds
