package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/fluxcd/cli-utils/pkg/object"
	"github.com/fluxcd/pkg/ssa"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/refit-gitops/refit/diff"
)

// writeStage applies items wave by wave (one kind at a time, concurrently
// within a kind). It stops after the first wave with a failure.
func (r *run) writeStage(ctx context.Context, items []*item) error {
	for _, wave := range waves(items) {
		errs := make([]error, len(wave))
		forEach(len(wave), r.opts.Concurrency, func(i int) {
			it := wave[i]
			action, err := r.write(ctx, it)
			if err != nil {
				errs[i] = &diff.ObjectError{Ref: it.change.Ref, Source: it.change.Source, Err: err}
				return
			}
			o := ObjectResult{Ref: it.change.Ref, Source: it.change.Source, Action: action, current: it.current}
			if action == Recreated {
				o.Reason = diff.ForceRecreates(it.change.Live)
			}
			r.record(o)
		})
		if err := errors.Join(errs...); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) write(ctx context.Context, it *item) (Action, error) {
	action := Configured
	if it.change.Action == diff.Create {
		action = Created
	}
	if it.recreate {
		if err := r.remove(ctx, it); err != nil {
			return "", err
		}
		action = Recreated
	}
	obj, err := r.a.ssaApply(ctx, it.obj)
	if err != nil {
		return "", fmt.Errorf("server-side apply: %w", err)
	}
	it.uid = obj.GetUID()
	it.current = currentMessage(obj)
	return action, nil
}

// remove deletes a forced object and waits until it is gone (finalizers
// run first), so that it can be created again.
func (r *run) remove(ctx context.Context, it *item) error {
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(it.obj.GroupVersionKind())
	live.SetNamespace(it.obj.GetNamespace())
	live.SetName(it.obj.GetName())
	// Background, as Flux: the garbage collector removes its dependents
	// (a Job's Pods) after it.
	if err := r.a.client.Delete(ctx, live.DeepCopy(), client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete to recreate: %w", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, r.opts.Timeout, true, func(ctx context.Context) (bool, error) {
		err := r.a.client.Get(ctx, client.ObjectKeyFromObject(live), live.DeepCopy())
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("delete to recreate: still there after %s: %w", r.opts.Timeout, err)
	}
	return nil
}

// waitDefinitions waits until the CRDs and Namespaces defs are established
// (active), so that what depends on them can be validated and written.
func (r *run) waitDefinitions(ctx context.Context, defs []*item, w *work) error {
	if len(defs) == 0 {
		return nil
	}
	// A Namespace is active in the server's answer to its creation: only
	// what that answer did not show Current (a CRD, not yet established)
	// is polled.
	set := make(object.ObjMetadataSet, 0, len(defs))
	for _, it := range defs {
		if it.current == "" {
			set = append(set, objMeta(it.change.Ref))
		}
	}
	if len(set) > 0 {
		err := r.a.manager.WaitForSetWithContext(ctx, set, ssa.WaitOptions{Interval: 200 * time.Millisecond, Timeout: r.opts.Timeout})
		if err != nil {
			return fmt.Errorf("wait for definitions: %w", err)
		}
	}
	if err := r.waitKindsServed(ctx, defs); err != nil {
		return err
	}
	// The ServiceAccount admission plugin refuses a Pod, even in a dry-run,
	// until the controller has made its namespace's default ServiceAccount.
	for _, ns := range newNamespacesWithPods(defs, w) {
		sa := &corev1.ServiceAccount{}
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, r.opts.Timeout, true, func(ctx context.Context) (bool, error) {
			err := r.a.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "default"}, sa)
			return err == nil, nil
		})
		if err != nil {
			return fmt.Errorf("namespace %s: no default ServiceAccount after %s: %w", ns, r.opts.Timeout, err)
		}
	}
	return nil
}

// waitKindsServed waits until the client's mapper resolves every served
// version of each CRD in defs. A CRD is Established a moment before the API
// server's discovery lists its group, and a custom resource dry-run in
// between fails with "no matches for kind".
func (r *run) waitKindsServed(ctx context.Context, defs []*item) error {
	mapper := r.a.client.RESTMapper()
	for _, it := range defs {
		if it.obj.GroupVersionKind().GroupKind() != (schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}) {
			continue
		}
		group, _, _ := unstructured.NestedString(it.obj.Object, "spec", "group")
		kind, _, _ := unstructured.NestedString(it.obj.Object, "spec", "names", "kind")
		versions, _, _ := unstructured.NestedSlice(it.obj.Object, "spec", "versions")
		for _, v := range versions {
			version, _ := v.(map[string]any)
			name, _ := version["name"].(string)
			if served, _ := version["served"].(bool); !served || name == "" {
				continue
			}
			gk := schema.GroupKind{Group: group, Kind: kind}
			var last error
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, r.opts.Timeout, true, func(context.Context) (bool, error) {
				_, last = mapper.RESTMapping(gk, name)
				return last == nil, nil
			})
			if err != nil {
				return fmt.Errorf("%s: kind %s/%s %s not served after %s: %v", it.change.Ref, group, name, kind, r.opts.Timeout, last)
			}
		}
	}
	return nil
}

// newNamespacesWithPods are the namespaces of defs this plan creates and
// puts bare Pods in.
func newNamespacesWithPods(defs []*item, w *work) []string {
	created := map[string]bool{}
	for _, it := range defs {
		if isNamespace(it.change.Ref.GroupKind()) && it.change.Action == diff.Create {
			created[it.change.Ref.Name] = true
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, it := range w.stages[stageResources] {
		ns := it.change.Ref.Namespace
		if it.change.Ref.GroupKind() == (schema.GroupKind{Kind: "Pod"}) && created[ns] && !seen[ns] {
			seen[ns] = true
			out = append(out, ns)
		}
	}
	return out
}

func objMeta(ref diff.Ref) object.ObjMetadata {
	return object.ObjMetadata{GroupKind: ref.GroupKind(), Namespace: ref.Namespace, Name: ref.Name}
}
