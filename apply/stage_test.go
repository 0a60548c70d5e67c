package apply

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/diff"
)

func obj(apiVersion, kind, ns, name string) *unstructured.Unstructured {
	return newUnstructured(apiVersion, kind, ns, name)
}

func crd(group, kind string) *unstructured.Unstructured {
	u := obj("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "things."+group)
	u.Object["spec"] = map[string]any{"group": group, "names": map[string]any{"kind": kind}}
	return u
}

func change(u *unstructured.Unstructured, action diff.Action, dryRun bool) diff.Change {
	c := diff.Change{Ref: diff.RefOf(u), Source: "app.yaml", Action: action, Desired: u}
	if dryRun {
		c.Merged = u.DeepCopy()
	}
	if action == diff.Delete {
		c.Desired, c.Merged, c.Live = nil, nil, u
	}
	return c
}

func TestSortPlan(t *testing.T) {
	deploy := obj("apps/v1", "Deployment", "shop", "web")
	plan := &diff.Plan{Changes: []diff.Change{
		change(deploy, diff.Create, false),                                         // in a new namespace
		change(obj("v1", "ConfigMap", "default", "old"), diff.Delete, false),       // left Git
		change(obj("example.com/v1", "Thing", "default", "t"), diff.Create, false), // kind from a new CRD
		change(obj("v1", "Namespace", "", "shop"), diff.Create, false),
		change(obj("v1", "ConfigMap", "default", "settings"), diff.Update, true),
		change(obj("v1", "Service", "default", "old"), diff.Delete, false),
		change(crd("example.com", "Thing"), diff.Create, true),
		change(obj("v1", "Secret", "default", "s"), diff.Unchanged, true),
		change(obj("v1", "ConfigMap", "default", "new"), diff.Create, false), // plan could not dry-run, no dependency
		change(obj("v1", "Namespace", "", "old-ns"), diff.Delete, false),
	}}
	inPlace := change(obj("apps/v1", "Deployment", "default", "api"), diff.Update, true)
	inPlace.Path = diff.PathInPlace
	refused := change(obj("apps/v1", "StatefulSet", "default", "db"), diff.Update, true)
	refused.Path, refused.Reason = diff.PathRefused, "InPlaceOnly"
	plan.Changes = append(plan.Changes, inPlace, refused)

	type itemSummary struct {
		Ref                string
		Validate, Deferred bool
	}
	summarize := func(items []*item) []itemSummary {
		var out []itemSummary
		for _, it := range items {
			out = append(out, itemSummary{it.change.Ref.String(), it.validate, it.deferred})
		}
		return out
	}
	refs := func(changes []*diff.Change) []string {
		var out []string
		for _, c := range changes {
			out = append(out, c.Ref.String())
		}
		return out
	}

	for _, tc := range []struct {
		name     string
		opts     Options
		defs     []itemSummary
		res      []itemSummary
		reported []Action
	}{
		{
			name: "defaults",
			opts: DefaultOptions(),
			defs: []itemSummary{
				{"CustomResourceDefinition.apiextensions.k8s.io/things.example.com", false, false},
				{"Namespace/shop", true, false},
			},
			res: []itemSummary{
				{"ConfigMap/default/new", true, false},
				{"ConfigMap/default/settings", false, false},
				{"Deployment.apps/shop/web", true, true},
				{"Thing.example.com/default/t", true, true},
			},
			reported: []Action{Unchanged, InPlace, Refused},
		},
		{
			name: "revalidate and in place as recreate",
			opts: func() Options { o := DefaultOptions(); o.Revalidate, o.InPlaceAsRecreate = true, true; return o }(),
			defs: []itemSummary{
				{"CustomResourceDefinition.apiextensions.k8s.io/things.example.com", true, false},
				{"Namespace/shop", true, false},
			},
			res: []itemSummary{
				{"ConfigMap/default/new", true, false},
				{"ConfigMap/default/settings", true, false},
				{"Deployment.apps/default/api", true, false},
				{"Deployment.apps/shop/web", true, true},
				{"Thing.example.com/default/t", true, true},
			},
			reported: []Action{Unchanged, Refused},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := sortPlan(plan, tc.opts)
			if d := cmp.Diff(tc.defs, summarize(w.stages[stageDefinitions])); d != "" {
				t.Errorf("definitions (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.res, summarize(w.stages[stageResources])); d != "" {
				t.Errorf("resources (-want +got):\n%s", d)
			}
			// Deletions run backwards: Services before ConfigMaps (as
			// Flux orders them), Namespaces last.
			if d := cmp.Diff([]string{"Service/default/old", "ConfigMap/default/old", "Namespace/old-ns"}, refs(w.prunes)); d != "" {
				t.Errorf("prunes (-want +got):\n%s", d)
			}
			var reported []Action
			for _, o := range w.reported {
				reported = append(reported, o.Action)
			}
			if d := cmp.Diff(tc.reported, reported); d != "" {
				t.Errorf("reported (-want +got):\n%s", d)
			}
			if len(w.desired) != len(plan.Changes)-3 {
				t.Errorf("%d desired, want every change but the 3 deletions", len(w.desired))
			}
		})
	}

	t.Run("the caller's objects are not the ones written", func(t *testing.T) {
		w := sortPlan(plan, DefaultOptions())
		w.stages[stageResources][0].obj.SetLabels(map[string]string{"x": "y"})
		for _, c := range plan.Changes {
			if c.Desired != nil && c.Desired.GetLabels() != nil {
				t.Fatalf("%s: desired object changed", c.Ref)
			}
		}
	})
}

func TestWaves(t *testing.T) {
	plan := &diff.Plan{}
	for _, u := range []*unstructured.Unstructured{
		obj("apps/v1", "Deployment", "a", "x"), obj("v1", "ConfigMap", "a", "c1"), obj("v1", "ServiceAccount", "a", "sa"),
		obj("apps/v1", "Deployment", "a", "y"), obj("v1", "ConfigMap", "b", "c2"), obj("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", "", "hook"),
		obj("example.com/v1", "Thing", "a", "t"),
	} {
		plan.Changes = append(plan.Changes, change(u, diff.Create, true))
	}
	var got [][]string
	for _, wave := range waves(sortPlan(plan, DefaultOptions()).stages[stageResources]) {
		var names []string
		for _, it := range wave {
			names = append(names, it.change.Ref.Name)
		}
		got = append(got, names)
	}
	want := [][]string{{"sa"}, {"c1", "c2"}, {"x", "y"}, {"t"}, {"hook"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("waves (-want +got):\n%s", d)
	}
}

func TestNewNamespacesWithPods(t *testing.T) {
	plan := &diff.Plan{Changes: []diff.Change{
		change(obj("v1", "Namespace", "", "fresh"), diff.Create, false),
		change(obj("v1", "Namespace", "", "known"), diff.Update, true),
		change(obj("v1", "Pod", "fresh", "p1"), diff.Create, false),
		change(obj("v1", "Pod", "fresh", "p2"), diff.Create, false),
		change(obj("v1", "Pod", "known", "p3"), diff.Create, true),
		change(obj("v1", "ConfigMap", "fresh", "c"), diff.Create, false),
	}}
	w := sortPlan(plan, DefaultOptions())
	if d := cmp.Diff([]string{"fresh"}, newNamespacesWithPods(w.stages[stageDefinitions], w)); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func TestJobsWithTTL(t *testing.T) {
	ttl := obj("batch/v1", "Job", "a", "once")
	ttl.Object["spec"] = map[string]any{"ttlSecondsAfterFinished": int64(0)}
	plain := obj("batch/v1", "Job", "a", "kept")
	plain.Object["spec"] = map[string]any{}
	plan := &diff.Plan{Changes: []diff.Change{change(ttl, diff.Create, true), change(plain, diff.Create, true)}}
	got := jobsWithTTL(plan)
	if !got[diff.RefOf(ttl)] || got[diff.RefOf(plain)] || len(got) != 1 {
		t.Errorf("got %v, want only %s", got, diff.RefOf(ttl))
	}
}

// Roles go in a stage of their own, and a binding of a role the plan creates
// is validated only after that stage: the API server checks a binding
// against the permissions of the role it names.
func TestSortPlanRoles(t *testing.T) {
	binding := func(kind, ns, name, role string) *unstructured.Unstructured {
		u := obj("rbac.authorization.k8s.io/v1", kind, ns, name)
		u.Object["roleRef"] = map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}
		return u
	}
	plan := &diff.Plan{Changes: []diff.Change{
		change(obj("rbac.authorization.k8s.io/v1", "Role", "shop", "web"), diff.Create, true),
		change(binding("RoleBinding", "shop", "web", "web"), diff.Create, false),
		change(binding("RoleBinding", "shop", "old", "existing"), diff.Create, true),
	}}
	w := sortPlan(plan, DefaultOptions())
	if len(w.stages[stageRoles]) != 1 || w.stages[stageRoles][0].change.Ref.Name != "web" {
		t.Fatalf("roles stage: %v", w.stages[stageRoles])
	}
	var after, early []string
	for _, it := range w.afterRolesValidation() {
		after = append(after, it.change.Ref.Name)
	}
	for _, it := range w.earlyValidation() {
		early = append(early, it.change.Ref.Name)
	}
	if d := cmp.Diff([]string{"web"}, after); d != "" {
		t.Errorf("validated after the roles (-want +got):\n%s", d)
	}
	if len(early) != 0 {
		t.Errorf("validated before any write: %v, want none (the others were dry-run by the plan)", early)
	}
}

// Only the definitions and roles that the remaining validation needs are
// written before it: a Namespace or CRD this plan creates and that holds
// or defines an object to validate, a Role a binding to validate names.
// Changes to existing ones, and new ones nothing waits for, are written
// once everything is validated, so a refused commit leaves them alone.
func TestNeededBeforeValidation(t *testing.T) {
	binding := obj("rbac.authorization.k8s.io/v1", "RoleBinding", "known", "web")
	binding.Object["roleRef"] = map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "web"}
	labelled := obj("v1", "Namespace", "", "known")
	labelled.SetLabels(map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	changedCRD := crd("example.org", "Gadget")
	changedCRD.SetName("gadgets.example.org")
	plan := &diff.Plan{Changes: []diff.Change{
		change(obj("v1", "Namespace", "", "fresh"), diff.Create, false),
		change(obj("v1", "Namespace", "", "empty"), diff.Create, false),
		change(labelled, diff.Update, true),
		change(crd("example.com", "Thing"), diff.Create, true),
		change(changedCRD, diff.Update, true),
		change(obj("v1", "ConfigMap", "fresh", "c"), diff.Create, false),
		change(obj("example.com/v1", "Thing", "known", "t"), diff.Create, false),
		change(obj("example.org/v1", "Gadget", "known", "g"), diff.Update, true),
		change(obj("rbac.authorization.k8s.io/v1", "Role", "known", "web"), diff.Create, true),
		change(obj("rbac.authorization.k8s.io/v1", "Role", "known", "unbound"), diff.Create, true),
		change(obj("rbac.authorization.k8s.io/v1", "Role", "known", "changed"), diff.Update, true),
		change(binding, diff.Create, false),
	}}
	w := sortPlan(plan, DefaultOptions())
	names := func(items []*item) []string {
		var out []string
		for _, it := range items {
			out = append(out, it.change.Ref.Kind+"/"+it.change.Ref.Name)
		}
		return out
	}
	early, late := needed(w.stages[stageDefinitions], w.deferredValidation())
	if d := cmp.Diff([]string{"CustomResourceDefinition/things.example.com", "Namespace/fresh"}, names(early)); d != "" {
		t.Errorf("definitions written before validation (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"CustomResourceDefinition/gadgets.example.org", "Namespace/empty", "Namespace/known"}, names(late)); d != "" {
		t.Errorf("definitions written after validation (-want +got):\n%s", d)
	}
	early, late = needed(w.stages[stageRoles], w.afterRolesValidation())
	if d := cmp.Diff([]string{"Role/web"}, names(early)); d != "" {
		t.Errorf("roles written before validation (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"Role/changed", "Role/unbound"}, names(late)); d != "" {
		t.Errorf("roles written after validation (-want +got):\n%s", d)
	}
}
