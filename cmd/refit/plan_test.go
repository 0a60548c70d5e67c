package main

import (
	"bytes"
	"encoding/json"
	"strings"
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
		{"in place", diff.Change{Path: diff.PathInPlace, Images: img, InPlace: []diff.Aspect{diff.AspectImage}}, "update in place (image): web nginx:1.27 → nginx:1.28"},
		{"re-target under a rollout", diff.Change{Path: diff.PathInPlace, Images: img, InPlace: []diff.Aspect{diff.AspectImage}, Reason: "in-place rollout under way: re-targeted to the new images"},
			"update in place (image): web nginx:1.27 → nginx:1.28 (in-place rollout under way: re-targeted to the new images)"},
		{"image, resources and metadata", diff.Change{Path: diff.PathInPlace, Images: img,
			InPlace: []diff.Aspect{diff.AspectImage, diff.AspectResources, diff.AspectMetadata},
			Resources: []diff.ResourceChange{{Container: "web", Resource: "requests.cpu", From: "100m", To: "200m"},
				{Container: "web", Resource: "limits.memory", To: "256Mi"}},
			Metadata: []diff.MetadataChange{{Kind: "label", Key: "tier", From: "a", To: "b"},
				{Kind: "annotation", Key: "team", To: "shop"}, {Kind: "annotation", Key: "old", From: "x", Removed: true}}},
			"update in place (image, resources, metadata): web nginx:1.27 → nginx:1.28; web requests.cpu 100m → 200m; web limits.memory unset → 256Mi; " +
				"label tier a → b; annotation team=shop added; annotation old removed"},
		{"resources only", diff.Change{Path: diff.PathInPlace, InPlace: []diff.Aspect{diff.AspectResources},
			Resources: []diff.ResourceChange{{Container: "web", Resource: "requests.memory", From: "64Mi", To: "128Mi"}}},
			"update in place (resources): web requests.memory 64Mi → 128Mi"},
		{"recreate with its reason", diff.Change{Path: diff.PathRecreate, Reason: "structural change: the QoS class changes from Guaranteed to Burstable (a running Pod keeps its class)",
			Fields: []string{"spec.template.spec.containers[name=web].resources.limits.cpu"}},
			"update, Pods recreated (structural change: the QoS class changes from Guaranteed to Burstable (a running Pod keeps its class)) spec.template.spec.containers[name=web].resources.limits.cpu"},
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

// -o json carries what goes in place and, for a recreation, the reason.
func TestPlanJSONInPlace(t *testing.T) {
	ref := diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
	plan := &diff.Plan{Changes: []diff.Change{
		{Ref: ref, Action: diff.Update, Class: diff.PodMutable, Path: diff.PathInPlace,
			InPlace:   []diff.Aspect{diff.AspectResources, diff.AspectMetadata},
			Resources: []diff.ResourceChange{{Container: "app", Resource: "requests.cpu", From: "100m", To: "200m"}},
			Metadata:  []diff.MetadataChange{{Kind: "annotation", Key: "team", From: "a", Removed: true}}},
		{Ref: ref, Action: diff.Update, Class: diff.Structural, Path: diff.PathRecreate, Reason: "structural change: label app is in the selector"},
	}}
	var out bytes.Buffer
	if err := writePlanJSON(&out, plan, nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Changes []struct {
			Class     string                `json:"class"`
			InPlace   []string              `json:"inPlace"`
			Resources []diff.ResourceChange `json:"resources"`
			Metadata  []diff.MetadataChange `json:"metadata"`
			Reason    string                `json:"reason"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	c, r := got.Changes[0], got.Changes[1]
	if c.Class != "PodMutable" || strings.Join(c.InPlace, ",") != "resources,metadata" || len(c.Resources) != 1 || c.Resources[0].To != "200m" ||
		len(c.Metadata) != 1 || !c.Metadata[0].Removed {
		t.Errorf("in-place change: %+v", c)
	}
	if r.Class != "Structural" || r.InPlace != nil || !strings.Contains(r.Reason, "selector") {
		t.Errorf("recreation: %+v", r)
	}
}
