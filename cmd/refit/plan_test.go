package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/diff"
)

func TestDescribeUpdate(t *testing.T) {
	img := []diff.ImageChange{{Container: "web", From: "nginx:1.27", To: "nginx:1.28"}}
	for _, tc := range []struct {
		name string
		ch   diff.Change
		want string
	}{
		{"in place", diff.Change{Path: diff.PathInPlace, Images: img}, "update in place: web nginx:1.27 → nginx:1.28"},
		{"re-target under a rollout", diff.Change{Path: diff.PathInPlace, Images: img, Reason: "in-place rollout under way: re-targeted to the new images"},
			"update in place: web nginx:1.27 → nginx:1.28 (in-place rollout under way: re-targeted to the new images)"},
		{"replicas under a rollout", diff.Change{Path: diff.PathInPlace, Reason: "in-place rollout under way: the change is applied with its hold kept", Fields: []string{"spec.replicas"}},
			"update in place: (in-place rollout under way: the change is applied with its hold kept) spec.replicas"},
		{"structural under a rollout", diff.Change{Path: diff.PathRecreate, Reason: "structural change: the in-place rollout under way ends", Fields: []string{"spec.template.spec.containers[name=web].env"}},
			"update, Pods recreated (structural change: the in-place rollout under way ends) spec.template.spec.containers[name=web].env"},
		{"refused", diff.Change{Path: diff.PathRefused, Reason: "structural change refused by update policy InPlaceOnly", Fields: []string{"spec.template.metadata.labels.a"}},
			"REFUSED (structural change refused by update policy InPlaceOnly) spec.template.metadata.labels.a"},
		{"no Pod replaced", diff.Change{Path: diff.PathApply, Fields: []string{"spec.replicas"}}, "update, no Pod replaced spec.replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, describeUpdate(tc.ch, palette{})); d != "" {
				t.Errorf("describeUpdate (-want +got):\n%s", d)
			}
		})
	}
}
