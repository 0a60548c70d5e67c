package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/refit-gitops/refit/diff"
)

// The inventory of an app is a ConfigMap refit-inventory-<app> in the
// inventory namespace: the objects refit applied for that app last time,
// one per line. It is what diff.Options.Previous is made of, and the only
// thing pruning trusts. The same ConfigMap holds the app's bad-commit
// memory (memory.go), written by another field manager so that neither
// write drops the other's keys.
const (
	// DefaultInventoryNamespace holds the inventories unless
	// WithInventoryNamespace says otherwise.
	DefaultInventoryNamespace = "refit-system"
	inventoryPrefix           = diff.StatePrefix
	// InventoryLabel marks inventory ConfigMaps, so that the other apps'
	// inventories are found with one list.
	InventoryLabel = diff.StateLabel
	inventoryKey   = "entries"
	inventoryApp   = "app"
)

// InventoryName is the name of app's inventory ConfigMap.
func InventoryName(app string) string { return inventoryPrefix + app }

func checkApp(app string) error {
	if app == "" {
		return fmt.Errorf("app name is empty")
	}
	if errs := validation.IsDNS1123Subdomain(InventoryName(app)); len(errs) > 0 {
		return fmt.Errorf("app %q: not usable in a ConfigMap name: %s", app, strings.Join(errs, "; "))
	}
	return nil
}

// encodeInventory writes refs one per line, sorted and without duplicates:
// "apiVersion kind namespace name", with "_" for no namespace (a namespace
// is a DNS label, so it can never be "_").
func encodeInventory(refs []diff.Ref) string {
	lines := make([]string, 0, len(refs))
	seen := map[diff.Ref]bool{}
	for _, r := range refs {
		if seen[r] {
			continue
		}
		seen[r] = true
		ns := r.Namespace
		if ns == "" {
			ns = "_"
		}
		apiVersion := schema.GroupVersion{Group: r.Group, Version: r.Version}.String()
		lines = append(lines, apiVersion+" "+r.Kind+" "+ns+" "+r.Name)
	}
	sort.Strings(lines)
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}

func decodeInventory(s string) ([]diff.Ref, error) {
	var refs []diff.Ref
	for i, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 4 {
			return nil, fmt.Errorf("line %d: %q: want \"apiVersion kind namespace name\"", i+1, line)
		}
		gv, err := schema.ParseGroupVersion(f[0])
		if err != nil || gv.Version == "" {
			return nil, fmt.Errorf("line %d: %q: bad apiVersion %q", i+1, line, f[0])
		}
		ns := f[2]
		if ns == "_" {
			ns = ""
		}
		refs = append(refs, diff.Ref{Group: gv.Group, Version: gv.Version, Kind: f[1], Namespace: ns, Name: f[3]})
	}
	return refs, nil
}

// nextInventory is what the inventory lists after an apply: what Git holds,
// plus what left Git but is still there because it was not pruned (pruning
// off, or a failed delete).
func nextInventory(desired []diff.Ref, kept []diff.Ref) []diff.Ref {
	out := append(append([]diff.Ref{}, desired...), kept...)
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// Inventory returns the objects refit applied for app last time (nil if it
// never did): pass them as diff.Options.Previous to plan deletions.
func (a *Applier) Inventory(ctx context.Context, app string) ([]diff.Ref, error) {
	if err := checkApp(app); err != nil {
		return nil, err
	}
	cm := &corev1.ConfigMap{}
	err := a.client.Get(ctx, client.ObjectKey{Namespace: a.inventoryNamespace, Name: InventoryName(app)}, cm)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("inventory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	if err := ownInventory(cm, app); err != nil {
		return nil, fmt.Errorf("inventory %s/%s: %w; refit neither prunes nor applies on it", a.inventoryNamespace, InventoryName(app), err)
	}
	refs, err := decodeInventory(cm.Data[inventoryKey])
	if err != nil {
		return nil, fmt.Errorf("inventory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	return refs, nil
}

// owners is what the inventories say about who applied what.
type owners struct {
	// others maps each object (unversioned) listed by another app's
	// inventory to that app.
	others map[diff.Ref]string
	// unreadable names the other inventories that could not be read
	// (forbidden, corrupt): they do not block this app, but nothing that
	// could hold their objects (a Namespace, a CRD) is pruned on a guess.
	unreadable []string
}

// otherInventories is what the other apps' inventories say about the
// objects of plan (about all objects when plan prunes a Namespace or a
// CRD, which hold others' objects). With take, the objects plan writes are
// claimed for app in the same step, unless another app holds one of them
// (see inventoryIndex); the claim ends with the inventory write (see
// saveInventory) or with release.
func (a *Applier) otherInventories(ctx context.Context, app string, plan *diff.Plan, take bool) owners {
	q := ownersQuery{app: app, ns: a.inventoryNamespace}
	var want []diff.Ref
	for _, c := range plan.Changes {
		q.refs = append(q.refs, c.Ref)
		if c.Action == diff.Delete {
			if gk := c.Ref.GroupKind(); isNamespace(gk) || isCRD(gk) {
				q.all = true
			}
			continue
		}
		want = append(want, c.Ref)
	}
	a.index.mu.Lock()
	synced := a.index.synced
	a.index.mu.Unlock()
	var view *inventoryIndex
	if !synced {
		view = a.listInventories(ctx)
	}
	return a.index.check(view, q, want, take)
}

// listInventories reads every inventory it may read with one list: across
// the cluster when refit may list ConfigMaps everywhere (inventories of
// apps impersonating their own identity live in the apps' namespaces),
// otherwise in the inventory namespace only.
func (a *Applier) listInventories(ctx context.Context) *inventoryIndex {
	list := &corev1.ConfigMapList{}
	err := a.client.List(ctx, list, client.HasLabels{InventoryLabel})
	if apierrors.IsForbidden(err) {
		list = &corev1.ConfigMapList{}
		err = a.client.List(ctx, list, client.InNamespace(a.inventoryNamespace), client.HasLabels{InventoryLabel})
	}
	if err != nil {
		x := newInventoryIndex()
		x.unreadable["list"] = fmt.Sprintf("inventories in %s: %v", a.inventoryNamespace, err)
		return x
	}
	return listed(list.Items)
}

// ownersFrom reads the inventories of apps other than app. An inventory
// outside ns (that of an app confined to its namespace, or a ConfigMap
// anyone who may write that namespace made) is trusted only for objects in
// its own namespace: whoever can write a namespace cannot, by writing a
// ConfigMap there, stop other apps from applying objects elsewhere.
func ownersFrom(inventories []corev1.ConfigMap, ns, app string) owners {
	return listed(inventories).check(nil, ownersQuery{app: app, ns: ns, all: true}, nil, false)
}

// claimedByOthers refuses the objects of desired that another app's
// inventory lists: one object, one app. Two apps writing one object would
// undo each other's changes on every pass, and the first to drop it would
// prune what the other still holds.
func claimedByOthers(desired []*diff.Change, others map[diff.Ref]string) []*diff.ObjectError {
	var out []*diff.ObjectError
	for _, c := range desired {
		if other := others[unversioned(c.Ref)]; other != "" {
			out = append(out, &diff.ObjectError{Ref: c.Ref, Source: c.Source,
				Err: fmt.Errorf("belongs to app %s (listed by its inventory): an object is applied by one app only; remove it from one of the two", other)})
		}
	}
	return out
}

// refitState refuses the objects of a plan that are refit's own state (an
// inventory and the bad-commit memory it holds): a commit that wrote them
// could make refit prune another app's objects or forget a bad commit.
func refitState(changes []diff.Change) []*diff.ObjectError {
	var out []*diff.ObjectError
	for i := range changes {
		c := &changes[i]
		if c.Action == diff.Delete || c.Desired == nil {
			continue
		}
		if why := diff.RefitState(c.Desired); why != "" {
			out = append(out, &diff.ObjectError{Ref: c.Ref, Source: c.Source, Err: errors.New(why)})
		}
	}
	return out
}

// ownInventory checks that cm is refit's inventory of app before it is
// trusted to say what app may prune.
func ownInventory(cm *corev1.ConfigMap, app string) error {
	if _, ok := cm.Labels[InventoryLabel]; !ok {
		return fmt.Errorf("not refit's inventory: no label %s", InventoryLabel)
	}
	if got := cm.Data[inventoryApp]; got != app {
		return fmt.Errorf("not the inventory of app %s: it names app %q", app, got)
	}
	return nil
}

// writeInventory stores app's inventory, creating its namespace if needed.
func (a *Applier) writeInventory(ctx context.Context, app string, refs []diff.Ref) error {
	cm := a.stateObject(app)
	cm.Object["data"] = map[string]any{inventoryApp: app, inventoryKey: encodeInventory(refs)}
	rv, err := a.writeState(ctx, cm, diff.FieldManager)
	if err != nil {
		return fmt.Errorf("inventory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	a.index.written(a.inventoryNamespace, app, refs, rv)
	return nil
}

// writeState applies an app's state ConfigMap as manager, creating the
// inventory namespace first if it is not known to exist. The namespace is
// looked up once per Applier, not before each of the three writes of every
// sync; if it was deleted since, the write finds no namespace, and it is
// made again.
func (a *Applier) writeState(ctx context.Context, cm *unstructured.Unstructured, manager string) (resourceVersion string, err error) {
	for try := 0; ; try++ {
		if err := a.ensureInventoryNamespace(ctx); err != nil {
			return "", err
		}
		obj := cm.DeepCopy()
		err := a.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.ForceOwnership, client.FieldOwner(manager))
		if apierrors.IsNotFound(err) && try == 0 {
			a.inventoryNamespaceSeen.Store(false)
			continue
		}
		if err != nil {
			return "", err
		}
		return obj.GetResourceVersion(), nil
	}
}

// Forget deletes app's state (its inventory and bad-commit memory): the
// app itself is gone. Pruning, if any, comes first: it needs the inventory.
func (a *Applier) Forget(ctx context.Context, app string) error {
	a.index.forget(a.inventoryNamespace, app)
	err := a.client.Delete(ctx, a.stateObject(app))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("inventory %s/%s: delete: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	return nil
}

// stateObject is app's state ConfigMap with its labels and no data.
func (a *Applier) stateObject(app string) *unstructured.Unstructured {
	cm := newUnstructured("v1", "ConfigMap", a.inventoryNamespace, InventoryName(app))
	cm.SetLabels(map[string]string{InventoryLabel: "true", "app.kubernetes.io/managed-by": "refit"})
	return cm
}

func (a *Applier) ensureInventoryNamespace(ctx context.Context) error {
	if a.inventoryNamespaceSeen.Load() {
		return nil
	}
	ns := &corev1.Namespace{}
	err := a.client.Get(ctx, client.ObjectKey{Name: a.inventoryNamespace}, ns)
	if apierrors.IsNotFound(err) {
		_, err = a.ssaApply(ctx, newUnstructured("v1", "Namespace", "", a.inventoryNamespace))
	}
	if err != nil {
		return fmt.Errorf("inventory namespace %s: %w", a.inventoryNamespace, err)
	}
	a.inventoryNamespaceSeen.Store(true)
	return nil
}

func newUnstructured(apiVersion, kind, namespace, name string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": apiVersion, "kind": kind,
		"metadata": map[string]any{"name": name}}}
	if namespace != "" {
		u.SetNamespace(namespace)
	}
	return u
}
