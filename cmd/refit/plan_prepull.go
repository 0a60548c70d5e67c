package main

import (
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
)

// prePullNote tells, on an in-place line, whether the nodes pull the new
// images before the Pods are patched (refit.dev/pre-pull).
func prePullNote(ch diff.Change) string {
	if ch.Desired == nil || len(ch.Images) == 0 {
		return ""
	}
	if inplace.PrePullDisabled(ch.Desired.GetAnnotations()) {
		return ", no pre-pull (the kubelet pulls at each restart)"
	}
	return ", pulled on the nodes first"
}
