package apply

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/fluxcd/pkg/ssa"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/refit-gitops/refit/diff"
)

// pruneDecision says what to do with one Delete change before touching the
// cluster. It is pure so that the rules are table-tested. Deleting a
// Namespace or a CRD deletes what it holds: they are kept while another
// app's inventory lists something in them.
// An object of an unreadable inventory could be in any Namespace or of any
// kind: none is deleted while one is unreadable.
func pruneDecision(c *diff.Change, prune bool, app string, owned map[diff.Ref]bool, o owners, inGit map[diff.Ref]string) (Action, string) {
	ref := unversioned(c.Ref)
	others := o.others
	switch {
	case inGit[ref] != "":
		// The inventory listed it under another API version: deleting
		// it would delete what Git holds.
		return SkippedInGit, "in Git as " + inGit[ref]
	case !owned[ref]:
		return SkippedNotOwned, fmt.Sprintf("not in the inventory of app %s", app)
	case others[ref] != "":
		return SkippedNotOwned, fmt.Sprintf("also in the inventory of app %s", others[ref])
	}
	if other, ok := heldFor(c, others); ok {
		return SkippedNotOwned, fmt.Sprintf("holds %s of app %s", other, others[other])
	}
	if gk := c.Ref.GroupKind(); (isNamespace(gk) || isCRD(gk)) && len(o.unreadable) > 0 {
		return SkippedNotOwned, fmt.Sprintf("may hold objects of another app whose inventory is unreadable (%s)", strings.Join(o.unreadable, "; "))
	}
	if !prune {
		return NotPruned, "pruning is off"
	}
	return Deleted, ""
}

// unversioned is ref without its version: one object is served under
// every version of its kind.
func unversioned(ref diff.Ref) diff.Ref {
	ref.Version = ""
	return ref
}

// heldFor returns an object of another app that deleting c would delete
// with it: one in the Namespace c is, or of the kind the CRD c defines.
func heldFor(c *diff.Change, others map[diff.Ref]string) (diff.Ref, bool) {
	var held func(diff.Ref) bool
	switch gk := c.Ref.GroupKind(); {
	case isNamespace(gk):
		held = func(r diff.Ref) bool { return r.Namespace == c.Ref.Name }
	case isCRD(gk) && c.Live != nil:
		group, _, _ := unstructured.NestedString(c.Live.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(c.Live.Object, "spec", "names", "kind")
		held = func(r diff.Ref) bool { return r.Group == group && r.Kind == kind }
	default:
		return diff.Ref{}, false
	}
	var found []diff.Ref
	for r := range others {
		if held(r) {
			found = append(found, r)
		}
	}
	if len(found) == 0 {
		return diff.Ref{}, false
	}
	sort.Slice(found, func(i, j int) bool { return found[i].String() < found[j].String() })
	return found[0], true
}

// prune deletes the plan's Delete changes that this app owns, in reverse
// apply order, kind by kind. It returns the objects that stay in the
// inventory: those not pruned because pruning is off.
func (r *run) prune(ctx context.Context, changes []*diff.Change, inventory, desired []diff.Ref) ([]diff.Ref, error) {
	if len(changes) == 0 {
		return nil, nil
	}
	inGit := make(map[diff.Ref]string, len(desired))
	for _, ref := range desired {
		inGit[unversioned(ref)] = schema.GroupVersion{Group: ref.Group, Version: ref.Version}.String()
	}
	var kept []diff.Ref
	for _, wave := range deletionWaves(changes) {
		errs := make([]error, len(wave))
		forEach(len(wave), r.opts.Concurrency, func(i int) {
			c := wave[i]
			action, reason := pruneDecision(c, r.opts.Prune, r.opts.App, r.owned, r.owners, inGit)
			if c.Ref == (diff.Ref{Version: "v1", Kind: "Namespace", Name: r.a.inventoryNamespace}) {
				action, reason = SkippedNotOwned, "holds refit's inventories"
			}
			if action == Deleted {
				var derr error
				action, derr = r.delete(ctx, c)
				if derr != nil {
					errs[i] = &diff.ObjectError{Ref: c.Ref, Source: c.Source, Err: derr}
					return
				}
				if action == SkippedProtected {
					reason = PruneAnnotation + ": " + PruneDisabled
				}
			}
			r.record(ObjectResult{Ref: c.Ref, Source: c.Source, Action: action, Reason: reason})
		})
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	for _, c := range changes {
		if o := r.result.Object(c.Ref); o != nil && o.Action == NotPruned {
			kept = append(kept, c.Ref)
		}
	}
	return kept, nil
}

// delete removes one object unless its live version is protected by
// refit.dev/prune: disabled (ssa reads the live object just before).
func (r *run) delete(ctx context.Context, c *diff.Change) (Action, error) {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(c.Ref.GroupKind().WithVersion(c.Ref.Version))
	obj.SetNamespace(c.Ref.Namespace)
	obj.SetName(c.Ref.Name)
	entry, err := r.a.manager.Delete(ctx, obj, ssa.DeleteOptions{
		PropagationPolicy: metav1.DeletePropagationBackground,
		Exclusions:        map[string]string{PruneAnnotation: PruneDisabled},
	})
	if err != nil {
		return "", fmt.Errorf("prune: %w", err)
	}
	if entry != nil && entry.Action == ssa.SkippedAction {
		return SkippedProtected, nil
	}
	return Deleted, nil
}
