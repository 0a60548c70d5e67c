package inplace

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"

	"github.com/refit-gitops/refit/diff"
)

// deployment updates a Deployment's Pods in place. The Deployment controller
// adopts as its "new" ReplicaSet the oldest one whose template equals the
// Deployment's, ignoring the pod-template-hash label (FindNewReplicaSet /
// EqualIgnoreHash in pkg/controller/deployment/util). So refit writes the
// new template with the Deployment paused, copies the defaulted template
// into the current ReplicaSet, unpauses, and patches the Pods: the
// controller sees nothing to roll out. Without the pause, a sync between the
// writes would create a ReplicaSet and start rolling Pods.
type deployment struct {
	base

	live  *appsv1.Deployment
	rs    *appsv1.ReplicaSet // the ReplicaSet that owns every Pod
	owned []*appsv1.ReplicaSet
	sel   labels.Selector
	surge *surgeSpec // extra Pods keep a bound of 0 (surge.go)
}

var deploymentGVR = resources[diff.Ref{Group: "apps", Kind: "Deployment"}.GroupKind()]

func (d *deployment) precheck(ctx context.Context) (string, error) {
	ref := d.change.Ref
	live, err := d.e.client.AppsV1().Deployments(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	d.live = live
	rec, resuming := readRecord(live.Annotations)
	if reason := deploymentPreconditions(live, resuming, quietTemplate(&live.Spec.Template, d.target)); reason != "" {
		return reason, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(live.Spec.Selector)
	if err != nil {
		return "", fmt.Errorf("%s: selector: %w", ref, err)
	}
	d.sel = sel
	rsList, err := d.e.client.AppsV1().ReplicaSets(ref.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return "", fmt.Errorf("%s: list ReplicaSets: %w", ref, err)
	}
	var owned []*appsv1.ReplicaSet
	for i := range rsList.Items {
		if metav1.IsControlledBy(&rsList.Items[i], live) {
			owned = append(owned, &rsList.Items[i])
		}
	}
	var active []*appsv1.ReplicaSet
	for _, rs := range owned {
		if rs.Spec.Replicas == nil || *rs.Spec.Replicas > 0 || rs.Status.Replicas > 0 {
			active = append(active, rs)
		}
	}
	if len(active) != 1 {
		return fmt.Sprintf("%d ReplicaSets have Pods: in place needs one", len(active)), nil
	}
	d.rs, d.owned = active[0], owned
	if !resuming && !equalIgnoreHash(&d.rs.Spec.Template, &live.Spec.Template) {
		return "the Pods' ReplicaSet is not the Deployment's current one", nil
	}
	if !resuming {
		if rec, err = d.e.newRecordOf(&live.Spec.Template.Spec); err != nil {
			return "", fmt.Errorf("%s: %w", ref, err)
		}
		rec = withOrigin(rec, &live.Spec.Template)
	}
	d.rec = resumed(rec, d.target)
	if !resuming && quietTemplate(&live.Spec.Template, d.target) {
		// Nothing restarts: no Pod goes down, so no surge is needed. (A
		// resumed rollout's live template is already the target: it
		// keeps the surge it started with.)
		return "", nil
	}
	if d.surge, _, err = deploymentSurge(live, d.mustMaxUnavailable()); err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	return "", nil
}

func (d *deployment) extraPods() *surgeSpec { return d.surge }

func (d *deployment) prepare(ctx context.Context) error {
	ref, rec, owned := d.change.Ref, d.rec, d.owned
	// (1) the new template and the pause, in one write.
	paused, err := withRecord(d.change.Desired, rec)
	if err != nil {
		return err
	}
	if err := unstructuredSet(paused, true, "spec", "paused"); err != nil {
		return err
	}
	if _, err := d.e.applyObject(ctx, deploymentGVR, paused); err != nil {
		return err
	}
	// (2) the defaulted template, read back, into the current ReplicaSet; and
	// no older ReplicaSet with that template may remain, or the controller
	// would adopt it instead (a rollback A→B→A).
	d.live, err = d.e.client.AppsV1().Deployments(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", ref, err)
	}
	for _, rs := range owned {
		if rs.UID != d.rs.UID && equalIgnoreHash(&rs.Spec.Template, &d.live.Spec.Template) {
			err := d.e.client.AppsV1().ReplicaSets(rs.Namespace).Delete(ctx, rs.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &rs.UID}})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("%s: delete old ReplicaSet %s with the new template: %w", ref, rs.Name, err)
			}
		}
	}
	if err := d.copyTemplate(ctx); err != nil {
		return err
	}
	// (3) unpause, keeping the rollout record until every Pod is done.
	unpaused, err := withRecord(d.change.Desired, rec)
	if err != nil {
		return err
	}
	_, err = d.e.applyObject(ctx, deploymentGVR, unpaused)
	return err
}

// deploymentPreconditions says why the in-place path cannot be taken, or "".
// A quiet change (no container restarts) needs no share of maxUnavailable.
func deploymentPreconditions(live *appsv1.Deployment, resuming, quiet bool) string {
	if resuming {
		return ""
	}
	replicas := int32(1)
	if live.Spec.Replicas != nil {
		replicas = *live.Spec.Replicas
	}
	switch {
	case live.Spec.Paused:
		return "the Deployment is paused"
	case live.Status.ObservedGeneration < live.Generation:
		return "the Deployment controller has not yet observed the last change"
	case live.Status.UpdatedReplicas != replicas || live.Status.Replicas != replicas:
		return fmt.Sprintf("the last rollout is not complete (%d of %d Pods updated, %d Pods)", live.Status.UpdatedReplicas, replicas, live.Status.Replicas)
	}
	if quiet {
		// Nothing restarts: no Pod goes down, so no surge is needed.
		return ""
	}
	if _, fallback, _ := deploymentSurge(live, (&deployment{live: live}).mustMaxUnavailable()); fallback != "" {
		return fallback
	}
	return ""
}

func (d *deployment) copyTemplate(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		rs, err := d.e.client.AppsV1().ReplicaSets(d.rs.Namespace).Get(ctx, d.rs.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if equalIgnoreHash(&rs.Spec.Template, &d.live.Spec.Template) {
			d.rs = rs
			return nil
		}
		tmpl := d.live.Spec.Template.DeepCopy()
		if tmpl.Labels == nil {
			tmpl.Labels = map[string]string{}
		}
		tmpl.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
		rs.Spec.Template = *tmpl
		// client-go returns an empty object with an error: d.rs must keep
		// the name the retry after a conflict reads again.
		updated, err := d.e.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{FieldManager: diff.FieldManager})
		if err != nil {
			return err
		}
		d.rs = updated
		return nil
	})
}

// equalIgnoreHash is the Deployment controller's template comparison.
func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	delete(b.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	return apiequality.Semantic.DeepEqual(a, b)
}

func (d *deployment) owns(pod *corev1.Pod) bool { return metav1.IsControlledBy(pod, d.rs) }
func (d *deployment) listOptions(o *metav1.ListOptions) {
	o.LabelSelector = d.sel.String()
}
func (d *deployment) revisionLabels() map[string]string {
	return nil // the Pods keep their ReplicaSet's pod-template-hash
}
func (d *deployment) expected() int {
	if d.live.Spec.Replicas != nil {
		return int(*d.live.Spec.Replicas)
	}
	return 1
}
func (d *deployment) eligible(*corev1.Pod) bool { return true }
func (d *deployment) ordinal(*corev1.Pod) int   { return -1 }
func (d *deployment) minReadySeconds() int32    { return d.live.Spec.MinReadySeconds }

func (d *deployment) maxUnavailable() (int, error) {
	replicas := 1
	if d.live.Spec.Replicas != nil {
		replicas = int(*d.live.Spec.Replicas)
	}
	if d.live.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return replicas, nil // the workload accepts all Pods down at once
	}
	var v *intstr.IntOrString
	if ru := d.live.Spec.Strategy.RollingUpdate; ru != nil {
		v = ru.MaxUnavailable
	}
	n, err := ResolveMaxUnavailable(v, intstr.FromString("25%"), replicas, RoundDown)
	if err != nil {
		return 0, fmt.Errorf("%s: maxUnavailable: %w", d.change.Ref, err)
	}
	return n, nil
}

func (d *deployment) mustMaxUnavailable() int {
	n, err := d.maxUnavailable()
	if err != nil {
		return 0
	}
	return n
}

func (d *deployment) progressDeadline() time.Duration {
	if d.live.Spec.ProgressDeadlineSeconds != nil {
		return time.Duration(*d.live.Spec.ProgressDeadlineSeconds) * time.Second
	}
	return 600 * time.Second
}

// refresh re-reads the Deployment (an HPA may scale it mid-rollout: the
// bound follows) and stops the rollout if the controller started one of its
// own: a ReplicaSet other than ours with Pods wanted.
func (d *deployment) refresh(ctx context.Context) error {
	live, err := d.e.client.AppsV1().Deployments(d.change.Ref.Namespace).Get(ctx, d.change.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", d.change.Ref, err)
	}
	d.live = live
	list, err := d.e.client.AppsV1().ReplicaSets(d.rs.Namespace).List(ctx, metav1.ListOptions{LabelSelector: d.sel.String(), ResourceVersion: "0"})
	if err != nil {
		return fmt.Errorf("%s: list ReplicaSets: %w", d.change.Ref, err)
	}
	for _, rs := range list.Items {
		if rs.UID != d.rs.UID && metav1.IsControlledBy(&rs, d.live) && rs.Spec.Replicas != nil && *rs.Spec.Replicas > 0 {
			return &stopError{reason: fmt.Sprintf("the Deployment controller started a rollout of its own (ReplicaSet %s)", rs.Name)}
		}
	}
	return nil
}

func (d *deployment) release(ctx context.Context) error {
	_, err := d.e.applyObject(ctx, deploymentGVR, d.change.Desired)
	return err
}
