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
		{"forced recreation of a claim", diff.Change{Reason: "refused in place (immutable); refit.dev/force deletes it and creates it again: the claim's data is lost"},
			"update (refused in place (immutable); refit.dev/force deletes it and creates it again: the claim's data is lost)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, describeUpdate(tc.ch, palette{})); d != "" {
				t.Errorf("describeUpdate (-want +got):\n%s", d)
			}
		})
	}
}

func TestPreviewed(t *testing.T) {
	ref := func(name string) diff.Ref {
		return diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: name}
	}
	plan := &diff.Plan{Changes: []diff.Change{
		{Ref: ref("new"), Action: diff.Create},
		{Ref: ref("gone"), Action: diff.Delete},
		{Ref: ref("same"), Action: diff.Unchanged},
	}}
	for _, tc := range []struct {
		name     string
		prune    bool
		want     []string
		wantKept int
	}{
		{"with --prune: deletions listed", true, []string{"new Create", "gone Delete", "same Unchanged"}, 0},
		{"without: deletions left out and counted", false, []string{"new Create", "same Unchanged"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, kept := previewed(plan, tc.prune)
			var names []string
			for _, c := range got.Changes {
				names = append(names, c.Ref.Name+" "+string(c.Action))
			}
			if d := cmp.Diff(tc.want, names); d != "" || kept != tc.wantKept {
				t.Errorf("changes (-want +got):\n%s kept %d, want %d", d, kept, tc.wantKept)
			}
		})
	}
	if len(plan.Changes) != 3 {
		t.Errorf("the plan given was changed: %d changes", len(plan.Changes))
	}
	// Only deletions: without --prune, the plan has no change (exit 0).
	only := &diff.Plan{Changes: []diff.Change{{Ref: ref("gone"), Action: diff.Delete}}}
	if got, _ := previewed(only, false); got.HasChanges() {
		t.Errorf("a plan of deletions only has changes without --prune")
	}
}
