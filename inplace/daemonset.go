package inplace

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/refit-gitops/refit/diff"
)

// daemonSet updates a DaemonSet's Pods in place. The controller counts a Pod
// as updated when its controller-revision-hash equals the newest
// ControllerRevision's hash or its pod-template-generation equals the
// DaemonSet's deprecated.daemonset.template.generation annotation (IsPodUpdated
// in pkg/controller/daemon/util). There is no partition: refit holds the
// controller with updateStrategy OnDelete, written together with the
// template, and restores Git's strategy only when every Pod carries the new
// hash, since RollingUpdate deletes any unavailable old Pod at once.
type daemonSet struct {
	base

	live       *appsv1.DaemonSet
	sel        labels.Selector
	hash       string
	generation string
	bound      int
	surge      *surgeSpec // extra Pods keep a bound of 0 (surge.go)
}

// The DaemonSet controller still labels Pods with the template generation
// (extensions/v1beta1 DaemonSetTemplateGenerationKey) and reads it in IsPodUpdated.
const podTemplateGenerationLabel = "pod-template-generation"

var daemonSetGVR = resources[diff.Ref{Group: "apps", Kind: "DaemonSet"}.GroupKind()]

func (d *daemonSet) precheck(ctx context.Context) (string, error) {
	ref := d.change.Ref
	live, err := d.e.client.AppsV1().DaemonSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	d.live = live
	rec, resuming := readRecord(live.Annotations)
	if !resuming {
		switch {
		case live.Status.ObservedGeneration < live.Generation:
			return "the DaemonSet controller has not yet observed the last change", nil
		case live.Status.UpdatedNumberScheduled < live.Status.CurrentNumberScheduled:
			// Only Pods that exist say so: a node that should run a Pod and
			// has none (no room, a quota) is unavailable, not behind.
			return fmt.Sprintf("a rollout of the DaemonSet is in progress (%d of %d Pods updated)",
				live.Status.UpdatedNumberScheduled, live.Status.CurrentNumberScheduled), nil
		}
		if rec, err = d.e.newRecordOf(&live.Spec.Template.Spec); err != nil {
			return "", fmt.Errorf("%s: %w", ref, err)
		}
		rec = withOrigin(rec, &live.Spec.Template)
	}
	d.rec = resumed(rec, d.target)
	if d.sel, err = metav1.LabelSelectorAsSelector(live.Spec.Selector); err != nil {
		return "", fmt.Errorf("%s: selector: %w", ref, err)
	}
	// The bound comes from Git's strategy, which the hold replaces.
	d.bound, err = daemonSetBound(d.change.Desired, int(live.Status.DesiredNumberScheduled))
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	if !resuming && quietTemplate(&live.Spec.Template, d.target) {
		// Nothing restarts: no Pod goes down, so no surge is needed. (A
		// resumed rollout's live template is already the target: it
		// keeps the surge it started with.)
		return "", nil
	}
	var fallback string
	if d.surge, fallback, err = daemonSetSurge(d.change.Desired, live, d.bound); err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	if fallback != "" && !resuming {
		return fallback, nil
	}
	return "", nil
}

func (d *daemonSet) extraPods() *surgeSpec { return d.surge }

func (d *daemonSet) prepare(ctx context.Context) error {
	ref := d.change.Ref
	held, err := withRecord(d.change.Desired, d.rec)
	if err != nil {
		return err
	}
	unstructured.RemoveNestedField(held.Object, "spec", "updateStrategy")
	if err := unstructuredSet(held, string(appsv1.OnDeleteDaemonSetStrategyType), "spec", "updateStrategy", "type"); err != nil {
		return err
	}
	if _, err := d.e.applyObject(ctx, daemonSetGVR, held); err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		ds, err := d.e.client.AppsV1().DaemonSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil || ds.Status.ObservedGeneration < ds.Generation {
			return false, nil
		}
		d.live = ds
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%s: the controller did not observe the new template: %w", ref, err)
	}
	if d.hash, err = d.newestRevisionHash(ctx, d.live); err != nil {
		return err
	}
	d.generation = d.live.Annotations[appsv1.DeprecatedTemplateGeneration]
	return nil
}

// newestRevisionHash is the hash label of the DaemonSet's highest
// ControllerRevision: the DaemonSet status has no updateRevision.
func (d *daemonSet) newestRevisionHash(ctx context.Context, ds *appsv1.DaemonSet) (string, error) {
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		return "", err
	}
	list, err := d.e.client.AppsV1().ControllerRevisions(ds.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", fmt.Errorf("%s: list ControllerRevisions: %w", d.change.Ref, err)
	}
	var newest *appsv1.ControllerRevision
	for i := range list.Items {
		cr := &list.Items[i]
		if metav1.IsControlledBy(cr, ds) && (newest == nil || cr.Revision > newest.Revision) {
			newest = cr
		}
	}
	if newest == nil {
		return "", fmt.Errorf("%s: no ControllerRevision", d.change.Ref)
	}
	return newest.Labels[appsv1.DefaultDaemonSetUniqueLabelKey], nil
}

// daemonSetBound resolves Git's maxUnavailable as the DaemonSet controller
// does: default 1, a percentage rounded up; 0 only with a surge (both 0
// means 1, updatedDesiredNodeCounts).
func daemonSetBound(desired *unstructured.Unstructured, scheduled int) (int, error) {
	var ds appsv1.DaemonSet
	if err := fromUnstructured(desired, &ds); err != nil {
		return 0, err
	}
	var unavailable, surge *intstr.IntOrString
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		unavailable, surge = ru.MaxUnavailable, ru.MaxSurge
	}
	n, err := ResolveMaxUnavailable(unavailable, intstr.FromInt32(1), scheduled, RoundUp)
	if err != nil {
		return 0, fmt.Errorf("maxUnavailable: %w", err)
	}
	s, err := ResolveMaxUnavailable(surge, intstr.FromInt32(0), scheduled, RoundUp)
	if err != nil {
		return 0, fmt.Errorf("maxSurge: %w", err)
	}
	if n == 0 && s == 0 {
		return 1, nil
	}
	return n, nil
}

func (d *daemonSet) owns(pod *corev1.Pod) bool         { return metav1.IsControlledBy(pod, d.live) }
func (d *daemonSet) listOptions(o *metav1.ListOptions) { o.LabelSelector = d.sel.String() }
func (d *daemonSet) revisionLabels() map[string]string {
	l := map[string]string{appsv1.DefaultDaemonSetUniqueLabelKey: d.hash}
	if d.generation != "" {
		l[podTemplateGenerationLabel] = d.generation
	}
	return l
}
func (d *daemonSet) eligible(*corev1.Pod) bool       { return true }
func (d *daemonSet) ordinal(*corev1.Pod) int         { return -1 }
func (d *daemonSet) minReadySeconds() int32          { return d.live.Spec.MinReadySeconds }
func (d *daemonSet) maxUnavailable() (int, error)    { return d.bound, nil }
func (d *daemonSet) progressDeadline() time.Duration { return 0 }

// expected counts nodes that should run a Pod: one that has none counts as
// unavailable, as the controller counts it.
func (d *daemonSet) expected() int { return int(d.live.Status.DesiredNumberScheduled) }

func (d *daemonSet) refresh(ctx context.Context) error {
	live, err := d.e.client.AppsV1().DaemonSets(d.change.Ref.Namespace).Get(ctx, d.change.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", d.change.Ref, err)
	}
	d.live = live
	bound, err := daemonSetBound(d.change.Desired, int(live.Status.DesiredNumberScheduled))
	if err != nil {
		return fmt.Errorf("%s: %w", d.change.Ref, err)
	}
	if d.surge == nil {
		bound = max(bound, 1) // a resumed rollout whose strategy moved to 0 still ends
	}
	d.bound = bound
	return nil
}

func (d *daemonSet) release(ctx context.Context) error {
	_, err := d.e.applyObject(ctx, daemonSetGVR, d.change.Desired)
	return err
}
