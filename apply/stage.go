package apply

import (
	"slices"
	"sort"

	"github.com/fluxcd/pkg/ssa"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/diff"
)

// stage is when an object is written: definitions (CustomResourceDefinitions
// and Namespaces) first and waited for, then Roles and ClusterRoles, then
// everything else.
type stage int

const (
	stageDefinitions stage = iota
	// stageRoles come before the bindings that name them: without the
	// "bind" verb, the API server accepts a binding (even in a dry-run) only
	// from a client that holds the permissions of a role it can look up.
	stageRoles
	stageResources
	stageCount
)

func isCRD(gk schema.GroupKind) bool {
	return gk == schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
}

func isNamespace(gk schema.GroupKind) bool { return gk == schema.GroupKind{Kind: "Namespace"} }

func stageOf(ref diff.Ref) stage {
	gk := ref.GroupKind()
	switch {
	case isCRD(gk) || isNamespace(gk):
		return stageDefinitions
	case isRole(gk):
		return stageRoles
	}
	return stageResources
}

const rbacGroup = "rbac.authorization.k8s.io"

func isRole(gk schema.GroupKind) bool {
	return gk.Group == rbacGroup && (gk.Kind == "Role" || gk.Kind == "ClusterRole")
}

// roleKey names a Role ("Role/ns/name") or ClusterRole ("ClusterRole//name").
func roleKey(kind, namespace, name string) string {
	if kind == "ClusterRole" {
		namespace = ""
	}
	return kind + "/" + namespace + "/" + name
}

// newRoles are the Roles and ClusterRoles the plan creates.
func newRoles(plan *diff.Plan) map[string]bool {
	out := map[string]bool{}
	for _, c := range plan.Changes {
		if c.Action == diff.Create && isRole(c.Ref.GroupKind()) {
			out[roleKey(c.Ref.Kind, c.Ref.Namespace, c.Ref.Name)] = true
		}
	}
	return out
}

// bindsNewRole reports whether a RoleBinding or ClusterRoleBinding names a
// role the plan creates: it can be validated only once that role exists.
func bindsNewRole(c *diff.Change, roles map[string]bool) bool {
	gk := c.Ref.GroupKind()
	if gk.Group != rbacGroup || (gk.Kind != "RoleBinding" && gk.Kind != "ClusterRoleBinding") || c.Desired == nil {
		return false
	}
	kind, _, _ := unstructured.NestedString(c.Desired.Object, "roleRef", "kind")
	name, _, _ := unstructured.NestedString(c.Desired.Object, "roleRef", "name")
	return roles[roleKey(kind, c.Ref.Namespace, name)]
}

// item is one object to write.
type item struct {
	change *diff.Change
	// obj is what is written: a copy of the desired object, never the
	// caller's.
	obj   *unstructured.Unstructured
	stage stage
	// validate: dry-run it before anything is written (the plan could
	// not, or Options.Revalidate).
	validate bool
	// deferred: its Namespace or its kind is created by this same plan, so
	// it can only be validated once the definitions stage is written.
	deferred bool
	// afterRoles: a binding of a role this plan creates, validated once the
	// roles stage is written.
	afterRoles bool
	// recreate: its dry-run failed on an immutable field and it is forced.
	recreate bool
	// uid is the object's UID once written.
	uid types.UID
	// current is the kstatus message of the server's answer to the write
	// when that answer is already Current ("" otherwise).
	current string
}

// work is a plan sorted into what Apply does with each change.
type work struct {
	// stages hold the objects to write, in write order.
	stages [stageCount][]*item
	// prunes are the deletions, in delete order (the reverse of the write
	// order: workloads and custom resources before Namespaces and CRDs).
	prunes []*diff.Change
	// reported are the changes decided without a write.
	reported []ObjectResult
	// desired are every object in Git, for the inventory.
	desired []diff.Ref
}

// sortPlan decides, without talking to the cluster, what happens to each
// change of the plan and in which order.
func sortPlan(plan *diff.Plan, opts Options) *work {
	w := &work{}
	newNamespaces, newKinds := definedByPlan(plan)
	roles := newRoles(plan)
	for i := range plan.Changes {
		c := &plan.Changes[i]
		if c.Action != diff.Delete {
			w.desired = append(w.desired, c.Ref)
		}
		switch {
		case c.Action == diff.Delete:
			w.prunes = append(w.prunes, c)
			continue
		case c.Action == diff.Unchanged:
			w.reported = append(w.reported, ObjectResult{Ref: c.Ref, Source: c.Source, Action: Unchanged})
			continue
		case c.Path == diff.PathRefused:
			w.reported = append(w.reported, ObjectResult{Ref: c.Ref, Source: c.Source, Action: Refused, Reason: c.Reason})
			continue
		case c.Path == diff.PathInPlace && !opts.InPlaceAsRecreate:
			w.reported = append(w.reported, ObjectResult{Ref: c.Ref, Source: c.Source, Action: InPlace, Reason: inPlaceReason(c)})
			continue
		}
		it := &item{change: c, obj: c.Desired.DeepCopy(), stage: stageOf(c.Ref)}
		it.validate = c.Merged == nil || opts.Revalidate
		it.afterRoles = it.validate && bindsNewRole(c, roles)
		it.deferred = it.validate && !it.afterRoles && it.stage != stageDefinitions &&
			(newNamespaces[c.Ref.Namespace] || newKinds[c.Ref.GroupKind()])
		w.stages[it.stage] = append(w.stages[it.stage], it)
	}
	for s := range w.stages {
		sort.SliceStable(w.stages[s], func(i, j int) bool { return refLess(w.stages[s][i].change.Ref, w.stages[s][j].change.Ref) })
	}
	sort.SliceStable(w.prunes, func(i, j int) bool { return refLess(w.prunes[j].Ref, w.prunes[i].Ref) })
	return w
}

// definedByPlan returns the Namespaces and the kinds (of CRDs) that the plan
// creates or changes: objects in them cannot be dry-run before the plan's
// definitions are written.
func definedByPlan(plan *diff.Plan) (map[string]bool, map[schema.GroupKind]bool) {
	namespaces, kinds := map[string]bool{}, map[schema.GroupKind]bool{}
	for _, c := range plan.Changes {
		if c.Desired == nil {
			continue
		}
		switch gk := c.Ref.GroupKind(); {
		case isNamespace(gk) && c.Action == diff.Create:
			namespaces[c.Ref.Name] = true
		case isCRD(gk) && (c.Action == diff.Create || c.Action == diff.Update):
			group, _, _ := unstructured.NestedString(c.Desired.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(c.Desired.Object, "spec", "names", "kind")
			kinds[schema.GroupKind{Group: group, Kind: kind}] = true
		}
	}
	return namespaces, kinds
}

func inPlaceReason(c *diff.Change) string {
	if c.Reason != "" {
		return c.Reason
	}
	return "left to the in-place engine"
}

// refLess orders objects as Flux applies them (ssa.ReconcileOrder: CRDs,
// Namespaces, RBAC, ConfigMaps, Services, workloads…, webhooks last), then
// by namespace and name so the order does not depend on the input.
func refLess(a, b diff.Ref) bool {
	if ga, gb := a.GroupKind(), b.GroupKind(); !ssa.Equals(ga, gb) {
		return ssa.IsLessThan(ga, gb)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// waves splits items (sorted by refLess) into runs of one kind: a wave is
// written concurrently, waves one after the other, so that e.g.
// ServiceAccounts and ConfigMaps exist before the workloads that use them.
func waves(items []*item) [][]*item {
	var out [][]*item
	for i := 0; i < len(items); {
		j := i + 1
		for j < len(items) && items[j].change.Ref.GroupKind() == items[i].change.Ref.GroupKind() {
			j++
		}
		out = append(out, items[i:j])
		i = j
	}
	return out
}

// deletionWaves is waves for deletions (sorted in reverse refLess order).
func deletionWaves(changes []*diff.Change) [][]*diff.Change {
	var out [][]*diff.Change
	for i := 0; i < len(changes); {
		j := i + 1
		for j < len(changes) && changes[j].Ref.GroupKind() == changes[i].Ref.GroupKind() {
			j++
		}
		out = append(out, changes[i:j])
		i = j
	}
	return out
}

// needed splits definitions (or roles) into those that must be written
// before the objects that depend on them can be validated (created by this
// plan, and some object to validate lives in them, is of their kind or
// binds them) and the rest, which are written only once everything is
// validated: a refused commit then leaves them as they were. What is
// written early is deleted again if a dependent is refused.
func needed(items []*item, dependents []*item) (early, late []*item) {
	for _, it := range items {
		if it.change.Action == diff.Create && slices.ContainsFunc(dependents, func(d *item) bool { return dependsOn(d, it) }) {
			early = append(early, it)
		} else {
			late = append(late, it)
		}
	}
	return early, late
}

// dependsOn reports whether d can be validated only once def exists: d is
// in the Namespace def, of the kind the CRD def defines, or binds the role
// def.
func dependsOn(d, def *item) bool {
	ref := def.change.Ref
	switch gk := ref.GroupKind(); {
	case isNamespace(gk):
		return d.change.Ref.Namespace == ref.Name
	case isCRD(gk):
		group, _, _ := unstructured.NestedString(def.obj.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(def.obj.Object, "spec", "names", "kind")
		return d.change.Ref.GroupKind() == schema.GroupKind{Group: group, Kind: kind}
	case isRole(gk):
		return bindsNewRole(d.change, map[string]bool{roleKey(ref.Kind, ref.Namespace, ref.Name): true})
	}
	return false
}
