package apply

import (
	"context"
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
// thing pruning trusts.
const (
	// DefaultInventoryNamespace holds the inventories unless
	// WithInventoryNamespace says otherwise.
	DefaultInventoryNamespace = "refit-system"
	inventoryPrefix           = "refit-inventory-"
	// InventoryLabel marks inventory ConfigMaps, so that the other apps'
	// inventories are found with one list.
	InventoryLabel = "refit.dev/inventory"
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
	refs, err := decodeInventory(cm.Data[inventoryKey])
	if err != nil {
		return nil, fmt.Errorf("inventory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
	return refs, nil
}

// otherInventories maps each object listed by another app's inventory to
// that app.
func (a *Applier) otherInventories(ctx context.Context, app string) (map[diff.Ref]string, error) {
	list := &corev1.ConfigMapList{}
	if err := a.client.List(ctx, list, client.InNamespace(a.inventoryNamespace), client.HasLabels{InventoryLabel}); err != nil {
		return nil, fmt.Errorf("list inventories in %s: %w", a.inventoryNamespace, err)
	}
	owners := map[diff.Ref]string{}
	for _, cm := range list.Items {
		other := cm.Data[inventoryApp]
		if cm.Name == InventoryName(app) {
			continue
		}
		refs, err := decodeInventory(cm.Data[inventoryKey])
		if err != nil {
			// Never prune on a guess: an unreadable inventory may list
			// what we are about to delete.
			return nil, fmt.Errorf("inventory %s/%s: %w", cm.Namespace, cm.Name, err)
		}
		for _, r := range refs {
			owners[r] = other
		}
	}
	return owners, nil
}

// writeInventory stores app's inventory, creating its namespace if needed.
func (a *Applier) writeInventory(ctx context.Context, app string, refs []diff.Ref) error {
	ns := &corev1.Namespace{}
	err := a.client.Get(ctx, client.ObjectKey{Name: a.inventoryNamespace}, ns)
	if apierrors.IsNotFound(err) {
		_, err = a.ssaApply(ctx, newUnstructured("v1", "Namespace", "", a.inventoryNamespace))
	}
	if err != nil {
		return fmt.Errorf("inventory namespace %s: %w", a.inventoryNamespace, err)
	}
	cm := newUnstructured("v1", "ConfigMap", a.inventoryNamespace, InventoryName(app))
	cm.SetLabels(map[string]string{InventoryLabel: "true", "app.kubernetes.io/managed-by": "refit"})
	cm.Object["data"] = map[string]any{inventoryApp: app, inventoryKey: encodeInventory(refs)}
	if _, err := a.ssaApply(ctx, cm); err != nil {
		return fmt.Errorf("inventory %s/%s: %w", a.inventoryNamespace, InventoryName(app), err)
	}
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
