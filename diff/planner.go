package diff

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/utils/ptr"
)

// FieldManager is the server-side-apply field manager refit writes with.
const FieldManager = "refit"

// Desired is one object rendered from Git, with the file it came from.
type Desired struct {
	Object *unstructured.Unstructured
	Source string
}

// Options are per-plan settings. Start with DefaultOptions.
type Options struct {
	// Namespace is given to namespaced objects that have none.
	Namespace string
	// DefaultPolicy applies to workloads without the policy annotation.
	DefaultPolicy Policy
	// Previous are the objects refit applied last time (its inventory):
	// those no longer desired and still in the cluster are planned as
	// deletions.
	Previous []Ref
	// Concurrency bounds the dry-run requests in flight.
	Concurrency int
}

// DefaultOptions plans into "default" with policy InPlaceIfPossible.
func DefaultOptions() Options {
	return Options{Namespace: "default", DefaultPolicy: InPlaceIfPossible, Concurrency: 8}
}

// Planner computes Plans against one cluster.
type Planner struct {
	client dynamic.Interface
	mapper meta.ResettableRESTMapper
}

// NewPlanner returns a Planner for the cluster cfg points at.
func NewPlanner(cfg *rest.Config) (*Planner, error) {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Planner{client: client, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}, nil
}

// ObjectError is a problem with one desired object: the plan names the
// object and the file it came from.
type ObjectError struct {
	Ref    Ref
	Source string
	Err    error
}

func (e *ObjectError) Error() string {
	if e.Source == "" {
		return fmt.Sprintf("%s: %v", e.Ref, e.Err)
	}
	return fmt.Sprintf("%s (%s): %v", e.Ref, e.Source, e.Err)
}

func (e *ObjectError) Unwrap() error { return e.Err }

// planned is the working state of one desired object.
type planned struct {
	Desired
	ref        Ref
	mapping    *meta.RESTMapping // nil when its kind arrives with a CRD of the same plan
	namespaced bool
}

// Plan compares desired with the cluster. Nothing is written: every
// comparison is a server-side-apply dry-run, so defaulted fields and fields
// owned by other managers do not show as changes. It fails, naming every
// object concerned, if any object is invalid or refused by the server.
func (p *Planner) Plan(ctx context.Context, desired []Desired, opts Options) (*Plan, error) {
	if opts.Concurrency < 1 {
		opts.Concurrency = 1
	}
	items, err := p.resolve(desired, opts)
	if err != nil {
		return nil, err
	}
	namespaces, nsLive, err := p.existingNamespaces(ctx, items)
	if err != nil {
		return nil, err
	}
	live, err := p.readLive(ctx, items, namespaces)
	if err != nil {
		return nil, err
	}
	for _, obj := range nsLive {
		live[liveKey(RefOf(obj))] = obj
	}
	if err := checkNamespaces(items, namespaces); err != nil {
		return nil, err
	}
	newRoles := rolesCreated(items, live)
	changes := make([]Change, len(items))
	errs := make([]error, len(items))
	sem := make(chan struct{}, opts.Concurrency)
	var wg sync.WaitGroup
	for i := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if bindsRoleIn(items[i], newRoles) {
				changes[i] = planBindingOfNewRole(items[i], live[liveKey(items[i].ref)])
				return
			}
			changes[i], errs[i] = p.planOne(ctx, items[i], live[liveKey(items[i].ref)], namespaces, opts)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	deletes, err := p.planDeletes(ctx, items, opts)
	if err != nil {
		return nil, err
	}
	return &Plan{Changes: append(changes, deletes...)}, nil
}

// resolve checks every object's identity and finds its REST mapping. A
// kind the cluster does not know yet is accepted only if a
// CustomResourceDefinition of the same plan defines it.
func (p *Planner) resolve(desired []Desired, opts Options) ([]planned, error) {
	// Kinds defined by CRDs of this plan, and whether they are namespaced.
	crdKinds := map[schema.GroupKind]bool{}
	for _, d := range desired {
		if gk := d.Object.GroupVersionKind().GroupKind(); gk == (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			group, _, _ := unstructured.NestedString(d.Object.Object, "spec", "group")
			kind, _, _ := unstructured.NestedString(d.Object.Object, "spec", "names", "kind")
			scope, _, _ := unstructured.NestedString(d.Object.Object, "spec", "scope")
			crdKinds[schema.GroupKind{Group: group, Kind: kind}] = scope != "Cluster"
		}
	}
	var errs []error
	seen := map[Ref]string{}
	items := make([]planned, 0, len(desired))
	for _, d := range desired {
		obj := d.Object.DeepCopy() // the caller's objects stay as they were
		item := planned{Desired: Desired{Object: obj, Source: d.Source}}
		gvk := obj.GroupVersionKind()
		if gvk.Kind == "" || gvk.Version == "" || obj.GetName() == "" {
			errs = append(errs, &ObjectError{Ref: RefOf(obj), Source: d.Source, Err: errors.New("apiVersion, kind and metadata.name are required")})
			continue
		}
		mapping, err := p.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		switch {
		case err == nil:
			item.mapping = mapping
			item.namespaced = mapping.Scope.Name() == meta.RESTScopeNameNamespace
		case meta.IsNoMatchError(err) && hasKey(crdKinds, gvk.GroupKind()):
			item.namespaced = crdKinds[gvk.GroupKind()] // the CRD's scope
		default:
			errs = append(errs, &ObjectError{Ref: RefOf(obj), Source: d.Source, Err: fmt.Errorf("kind %s is not known to the cluster: %w", gvk, err)})
			continue
		}
		if item.namespaced && obj.GetNamespace() == "" {
			obj.SetNamespace(opts.Namespace)
		}
		if !item.namespaced && item.mapping != nil && obj.GetNamespace() != "" {
			obj.SetNamespace("") // as kubectl does for cluster-scoped kinds
		}
		item.ref = RefOf(obj)
		if why := RefitState(obj); why != "" {
			errs = append(errs, &ObjectError{Ref: item.ref, Source: d.Source, Err: errors.New(why)})
			continue
		}
		if prev, dup := seen[item.ref]; dup {
			errs = append(errs, &ObjectError{Ref: item.ref, Source: d.Source, Err: fmt.Errorf("defined twice (also in %s)", prev)})
			continue
		}
		seen[item.ref] = d.Source
		items = append(items, item)
	}
	return items, errors.Join(errs...)
}

func hasKey[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

type listKey struct {
	gvr       schema.GroupVersionResource
	namespace string
}

func liveKey(r Ref) string { return r.String() }

// getPerKind is how many cluster-scoped objects of one kind are read one
// GET each before one list of the kind is cheaper.
const getPerKind = 4

// readPlan decides how the live objects of items are read: one list per
// kind and namespace (lists), or one GET each (gets). Nothing is read in
// a namespace that does not exist (its objects are all new), nor a
// Namespace that namespaces says was read already. A
// cluster-scoped kind is listed only for many objects: its list is the
// whole cluster's (every app's Namespace, for an app that has one).
func readPlan(items []planned, namespaces map[string]bool) (lists []listKey, gets []int) {
	perKey := map[listKey][]int{}
	var keys []listKey
	for i, it := range items {
		if it.mapping == nil || (it.namespaced && !namespaces[it.ref.Namespace]) {
			continue
		}
		if it.ref.Group == "" && it.ref.Kind == "Namespace" && it.ref.Version == "v1" && hasKey(namespaces, it.ref.Name) {
			continue // existingNamespaces read it (or was forbidden to: so would a GET be)
		}
		k := listKey{gvr: it.mapping.Resource, namespace: it.ref.Namespace}
		if _, ok := perKey[k]; !ok {
			keys = append(keys, k)
		}
		perKey[k] = append(perKey[k], i)
	}
	for _, k := range keys {
		if !items[perKey[k][0]].namespaced && len(perKey[k]) < getPerKind {
			gets = append(gets, perKey[k]...)
			continue
		}
		lists = append(lists, k)
	}
	return lists, gets
}

// readLive reads the live objects as readPlan says.
func (p *Planner) readLive(ctx context.Context, items []planned, namespaces map[string]bool) (map[string]*unstructured.Unstructured, error) {
	lists, gets := readPlan(items, namespaces)
	live := map[string]*unstructured.Unstructured{}
	for _, k := range lists {
		list, err := p.client.Resource(k.gvr).Namespace(k.namespace).List(ctx, metav1.ListOptions{})
		// Forbidden: the objects are planned as creations, whose dry-run
		// answers Forbidden naming each object.
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %s in namespace %q: %w", k.gvr.Resource, k.namespace, err)
		}
		for i := range list.Items {
			obj := &list.Items[i]
			if obj.GetAPIVersion() == "" {
				obj.SetAPIVersion(k.gvr.GroupVersion().String())
			}
			if obj.GetKind() == "" {
				obj.SetKind(strings.TrimSuffix(list.GetKind(), "List"))
			}
			live[liveKey(RefOf(obj))] = obj
		}
	}
	for _, i := range gets {
		it := items[i]
		obj, err := p.client.Resource(it.mapping.Resource).Get(ctx, it.ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) || apierrors.IsForbidden(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: get: %w", it.ref, err)
		}
		live[liveKey(RefOf(obj))] = obj
	}
	return live, nil
}

// existingNamespaces reads the namespaces of items: whether each exists,
// and the Namespace objects read (a Namespace of the plan whose namespace
// it is need not be read again).
func (p *Planner) existingNamespaces(ctx context.Context, items []planned) (map[string]bool, []*unstructured.Unstructured, error) {
	ns := map[string]bool{}
	var objs []*unstructured.Unstructured
	gvr := schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
	for _, it := range items {
		if !it.namespaced {
			continue
		}
		name := it.ref.Namespace
		if _, done := ns[name]; done {
			continue
		}
		// One GET per namespace: an identity confined to its namespaces
		// may get them (a RoleBinding of view/edit grants it) but never
		// list all namespaces.
		obj, err := p.client.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			ns[name] = true
			obj.SetAPIVersion("v1")
			obj.SetKind("Namespace")
			objs = append(objs, obj)
		case apierrors.IsForbidden(err):
			// Forbidden: it may exist; the object's own dry-run says what
			// the identity may not do, naming the object.
			ns[name] = true
		case apierrors.IsNotFound(err):
			ns[name] = false
		default:
			return nil, nil, fmt.Errorf("namespace %s: %w", name, err)
		}
	}
	return ns, objs, nil
}

const rbacGroup = "rbac.authorization.k8s.io"

// rolesCreated are the Roles ("Role/ns/name") and ClusterRoles
// ("ClusterRole//name") of the plan that do not exist yet.
func rolesCreated(items []planned, live map[string]*unstructured.Unstructured) map[string]bool {
	out := map[string]bool{}
	for _, it := range items {
		if it.ref.Group == rbacGroup && (it.ref.Kind == "Role" || it.ref.Kind == "ClusterRole") && live[liveKey(it.ref)] == nil {
			out[roleKey(it.ref.Kind, it.ref.Namespace, it.ref.Name)] = true
		}
	}
	return out
}

func roleKey(kind, namespace, name string) string {
	if kind == "ClusterRole" {
		namespace = ""
	}
	return kind + "/" + namespace + "/" + name
}

// bindsRoleIn reports whether it is a RoleBinding or ClusterRoleBinding of
// one of roles. Such a binding cannot be dry-run yet: without the "bind"
// verb, the API server accepts it only from a client that holds the
// permissions of a role it can look up. The apply stage validates it once
// the role is written.
func bindsRoleIn(it planned, roles map[string]bool) bool {
	if it.ref.Group != rbacGroup || (it.ref.Kind != "RoleBinding" && it.ref.Kind != "ClusterRoleBinding") {
		return false
	}
	kind, _, _ := unstructured.NestedString(it.Object.Object, "roleRef", "kind")
	name, _, _ := unstructured.NestedString(it.Object.Object, "roleRef", "name")
	return roles[roleKey(kind, it.ref.Namespace, name)]
}

func planBindingOfNewRole(it planned, live *unstructured.Unstructured) Change {
	c := Change{Ref: it.ref, Source: it.Source, Desired: it.Object, Live: live, Action: Create}
	if live != nil {
		c.Action, c.Reason = Update, "binds a role this plan creates: validated once the role exists"
	}
	return c
}

// checkNamespaces fails for objects whose namespace neither exists nor is
// created by the same plan.
func checkNamespaces(items []planned, existing map[string]bool) error {
	planned := map[string]bool{}
	for _, it := range items {
		if it.ref.Kind == "Namespace" && it.ref.Group == "" {
			planned[it.ref.Name] = true
		}
	}
	var errs []error
	for _, it := range items {
		if it.namespaced && !existing[it.ref.Namespace] && !planned[it.ref.Namespace] {
			errs = append(errs, &ObjectError{Ref: it.ref, Source: it.Source,
				Err: fmt.Errorf("namespace %q does not exist and is not defined in Git", it.ref.Namespace)})
		}
	}
	return errors.Join(errs...)
}

func (p *Planner) planOne(ctx context.Context, it planned, live *unstructured.Unstructured, namespaces map[string]bool, opts Options) (Change, error) {
	c := Change{Ref: it.ref, Source: it.Source, Desired: it.Object, Live: live}
	fail := func(err error) (Change, error) { return c, &ObjectError{Ref: it.ref, Source: it.Source, Err: err} }
	if live == nil {
		c.Action = Create
		// A new object is validated now if it can be: its kind and its
		// namespace already exist. Otherwise they are created first by the
		// same plan, and validated when it is applied.
		if it.namespaced && !namespaces[it.ref.Namespace] {
			return c, nil
		}
		if it.mapping != nil {
			merged, err := p.dryRunApply(ctx, it)
			if err != nil {
				return fail(err)
			}
			c.Merged = merged
		}
		return c, nil
	}
	merged, err := p.dryRunApply(ctx, it)
	if err != nil && forced(it.Object) && apierrors.IsInvalid(err) {
		if !listed(opts.Previous, it.ref) {
			return fail(fmt.Errorf("%s: not deleted: this app never applied it (it is not in the app's inventory), and refit deletes only what it applied: %w", ForceAnnotation, err))
		}
		// Possibly an immutable field: the apply stage checks that and
		// deletes and creates the object, as the annotation asks.
		c.Action, c.Reason = Update, "refused in place ("+err.Error()+"); "+ForceRecreates(live)
		if IsWorkload(it.ref.GroupKind()) {
			c.Class, c.Path = Structural, PathRecreate
		}
		return c, nil
	}
	if err != nil {
		return fail(err)
	}
	c.Merged = merged
	cl := Classify(it.ref.GroupKind(), live.Object, merged.Object)
	if !cl.Changed {
		c.Action = Unchanged
		return c, nil
	}
	c.Action, c.Fields = Update, cl.Fields
	if !IsWorkload(it.ref.GroupKind()) {
		return c, nil
	}
	c.Class, c.Images, c.InPlace, c.Resources, c.Metadata = cl.Class, cl.Images, cl.InPlace, cl.Resources, cl.Metadata
	c.Policy = opts.DefaultPolicy
	if v, ok := it.Object.GetAnnotations()[PolicyAnnotation]; ok {
		c.Policy = Policy(v)
	}
	c.Path, c.Reason, err = Decide(cl, c.Policy)
	if err != nil {
		return fail(err)
	}
	if c.Class.InPlace() {
		c.Fields = nil // the images, resources and metadata say it all
	}
	return c, nil
}

// ForceAnnotation set to "true" on an object in Git lets refit delete and
// create it again when a change touches an immutable field.
const ForceAnnotation = "refit.dev/force"

func forced(obj *unstructured.Unstructured) bool {
	return obj.GetAnnotations()[ForceAnnotation] == "true"
}

// dryRunApply asks the server what applying the object would produce.
func (p *Planner) dryRunApply(ctx context.Context, it planned) (*unstructured.Unstructured, error) {
	obj := it.Object.DeepCopy()
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	data, err := obj.MarshalJSON()
	if err != nil {
		return nil, err
	}
	merged, err := p.client.Resource(it.mapping.Resource).Namespace(it.ref.Namespace).Patch(ctx, it.ref.Name, types.ApplyPatchType, data,
		metav1.PatchOptions{FieldManager: FieldManager, Force: ptr.To(true), DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return nil, fmt.Errorf("server-side dry-run: %w", err)
	}
	return merged, nil
}

// planDeletes plans the removal of objects refit applied before that are no
// longer in Git and still exist.
func (p *Planner) planDeletes(ctx context.Context, items []planned, opts Options) ([]Change, error) {
	// An object Git moved to another API version is the same object.
	unversioned := func(r Ref) Ref { r.Version = ""; return r }
	desired := map[Ref]bool{}
	for _, it := range items {
		desired[unversioned(it.ref)] = true
	}
	var out []Change
	for _, ref := range opts.Previous {
		if desired[unversioned(ref)] {
			continue
		}
		mapping, err := p.mapper.RESTMapping(ref.GroupKind(), ref.Version)
		if meta.IsNoMatchError(err) {
			continue // its kind is gone, and so is it
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		live, err := p.client.Resource(mapping.Resource).Namespace(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: get: %w", ref, err)
		}
		out = append(out, Change{Ref: ref, Action: Delete, Live: live})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref.String() < out[j].Ref.String() })
	return out, nil
}
