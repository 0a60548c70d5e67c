package inplace

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/diff"
)

func gateStatus(pod *corev1.Pod) (corev1.ConditionStatus, bool) {
	for _, c := range pod.Status.Conditions {
		if c.Type == GateCondition {
			return c.Status, true
		}
	}
	return "", false
}

func gateTrue(pod *corev1.Pod) bool {
	s, _ := gateStatus(pod)
	return s == corev1.ConditionTrue
}

func gateMissing(pod *corev1.Pod) bool {
	_, ok := gateStatus(pod)
	return !ok
}

func podContainersReady(pod *corev1.Pod) bool {
	if len(pod.Status.ContainerStatuses) == 0 {
		return false
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if !cs.Ready {
			return false
		}
	}
	return true
}

// GatePatch builds the strategic-merge patch of the Pod's status that sets
// refit's readiness-gate condition. It names the Pod's UID: the API server
// refuses a changed UID, so a patch built for a Pod is never taken by
// another Pod recreated under its name (a StatefulSet's).
func GatePatch(pod *corev1.Pod, status corev1.ConditionStatus, now time.Time) ([]byte, error) {
	return json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": pod.UID},
		"status": map[string]any{"conditions": []map[string]any{{
			"type": GateCondition, "status": status, "lastTransitionTime": metav1.NewTime(now),
			"reason": map[corev1.ConditionStatus]string{corev1.ConditionTrue: "InPlaceUpdateDone", corev1.ConditionFalse: "InPlaceUpdateStarting"}[status],
		}}},
	})
}

// setGate writes refit's readiness-gate condition on the Pod's status (the
// kubelet keeps conditions it does not own). It needs pods/status. A Pod
// gone or replaced under its name is no error: the next pass sees it as it
// is.
func (e *Engine) setGate(ctx context.Context, pod *corev1.Pod, status corev1.ConditionStatus) error {
	if s, ok := gateStatus(pod); ok && s == status {
		return nil
	}
	patch, err := GatePatch(pod, status, e.now())
	if err != nil {
		return err
	}
	pods := e.client.CoreV1().Pods(pod.Namespace)
	_, err = pods.Patch(ctx, pod.Name, types.StrategicMergePatchType, patch,
		metav1.PatchOptions{FieldManager: diff.FieldManager}, "status")
	switch {
	case err == nil, apierrors.IsNotFound(err):
		return nil
	case refusal(err) && podChanged(ctx, pods, pod):
		return nil
	default:
		return fmt.Errorf("pod %s/%s: set %s=%s: %w", pod.Namespace, pod.Name, GateCondition, status, err)
	}
}

// podChanged tells a write refused because the Pod changed since it was
// read (a failed test op, another UID under the name) from a refusal of
// the write itself: it reads the Pod again.
func podChanged(ctx context.Context, pods podGetter, pod *corev1.Pod) bool {
	now, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return true
	}
	return err == nil && (now.UID != pod.UID || now.ResourceVersion != pod.ResourceVersion)
}

type podGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Pod, error)
}

// OpenGates sets refit's readiness-gate condition True, once, on the Pods of
// the workload that the GateKeeper would open (gateToOpen): Pods that lack
// it, and Pods whose gate was left False that are ready again. It does
// nothing for a workload whose template does not list the gate.
func (e *Engine) OpenGates(ctx context.Context, workload *unstructured.Unstructured) (int, error) {
	g, ok := gatedOf(workload)
	if !ok {
		return 0, nil
	}
	opts := metav1.ListOptions{LabelSelector: g.sel.String()}
	if g.pod != "" {
		opts = metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", g.pod).String()}
	}
	pods, err := e.client.CoreV1().Pods(g.namespace).List(ctx, opts)
	if err != nil {
		return 0, fmt.Errorf("%s/%s: list pods: %w", workload.GetKind(), workload.GetName(), err)
	}
	n := 0
	for i := range pods.Items {
		pod := &pods.Items[i]
		if !gateToOpen(pod, []gatedWorkload{g}, e.Busy(pod.UID)) {
			continue
		}
		if err := e.setGate(ctx, pod, corev1.ConditionTrue); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
