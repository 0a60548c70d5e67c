// Package apply writes a diff.Plan to the cluster the way Flux's
// kustomize-controller does: server-side apply with field manager "refit",
// CustomResourceDefinitions and Namespaces first, every object validated by a
// dry-run before anything is written, pruning of objects that left Git through
// an inventory kept in the cluster, and a kstatus health wait.
//
// It does not patch Pods in place (package inplace) and does not compute
// diffs (package diff): workload updates the plan sends in place are only
// reported, unless Options.InPlaceAsRecreate asks to apply them.
package apply
