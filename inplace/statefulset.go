package inplace

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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

// statefulSet updates a StatefulSet's Pods in place. The controller counts a
// Pod as updated when its controller-revision-hash label equals
// status.updateRevision, and with RollingUpdate deletes Pods at other
// revisions from the highest ordinal down to the partition. So refit holds
// the controller with partition = replicas, writes the template, and patches
// each Pod's images and revision label in one write; the hold stays until
// every Pod carries the new revision, because the controller deletes
// unavailable old-revision Pods at once (Parallel with maxUnavailable).
type statefulSet struct {
	base

	live      *appsv1.StatefulSet
	sel       labels.Selector
	revision  string
	partition int // from Git: ordinals below start+partition are not updated
}

var statefulSetGVR = resources[diff.Ref{Group: "apps", Kind: "StatefulSet"}.GroupKind()]

func (s *statefulSet) precheck(ctx context.Context) (string, error) {
	ref := s.change.Ref
	live, err := s.e.client.AppsV1().StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", ref, err)
	}
	s.live = live
	rec, resuming := readRecord(live.Annotations)
	if !resuming {
		if reason := statefulSetPreconditions(live); reason != "" {
			return reason, nil
		}
		if rec, err = s.e.newRecordOf(&live.Spec.Template.Spec); err != nil {
			return "", fmt.Errorf("%s: %w", ref, err)
		}
		rec = withOrigin(rec, &live.Spec.Template)
	}
	s.rec = resumed(rec, s.target)
	if s.sel, err = metav1.LabelSelectorAsSelector(live.Spec.Selector); err != nil {
		return "", fmt.Errorf("%s: selector: %w", ref, err)
	}
	p, _, _ := unstructured.NestedInt64(s.change.Desired.Object, "spec", "updateStrategy", "rollingUpdate", "partition")
	s.partition = int(p)
	return "", nil
}

// statefulSetPreconditions says why the in-place path cannot start, or "".
// With a partition, the Pods below it keep the current revision for good:
// the last rollout is complete when every Pod at or above it is updated.
func statefulSetPreconditions(live *appsv1.StatefulSet) string {
	replicas := replicasOf(live.Spec.Replicas)
	partition := 0
	if ru := live.Spec.UpdateStrategy.RollingUpdate; live.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType && ru != nil && ru.Partition != nil {
		partition = int(*ru.Partition)
	}
	switch {
	case live.Status.ObservedGeneration < live.Generation:
		return "the StatefulSet controller has not yet observed the last change"
	case live.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType && int(live.Status.UpdatedReplicas) < replicas-partition:
		return fmt.Sprintf("a rollout of the StatefulSet is in progress (%d of %d Pods updated)", live.Status.UpdatedReplicas, max(replicas-partition, 0))
	}
	return ""
}

func replicasOf(r *int32) int {
	if r == nil {
		return 1
	}
	return int(*r)
}

func (s *statefulSet) prepare(ctx context.Context) error {
	ref, live := s.change.Ref, s.live
	held, err := withRecord(s.change.Desired, s.rec)
	if err != nil {
		return err
	}
	if live.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		replicas := int64(replicasOf(live.Spec.Replicas))
		if r, ok, _ := unstructured.NestedInt64(s.change.Desired.Object, "spec", "replicas"); ok && r > replicas {
			replicas = r
		}
		if err := unstructuredSet(held, replicas, "spec", "updateStrategy", "rollingUpdate", "partition"); err != nil {
			return err
		}
	}
	if _, err := s.e.applyObject(ctx, statefulSetGVR, held); err != nil {
		return err
	}
	// The controller computes the new revision when it next syncs.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		sts, err := s.e.client.AppsV1().StatefulSets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		s.live = sts
		return sts.Status.ObservedGeneration >= sts.Generation && sts.Status.UpdateRevision != "", nil
	})
	if err != nil {
		return fmt.Errorf("%s: the controller did not compute the new revision: %w", ref, err)
	}
	s.revision = s.live.Status.UpdateRevision
	return nil
}

// start is the first ordinal (spec.ordinals.start).
func (s *statefulSet) start() int {
	if s.live.Spec.Ordinals != nil {
		return int(s.live.Spec.Ordinals.Start)
	}
	return 0
}

// index is the Pod's place among the replicas (ordinal - start), or -1.
func (s *statefulSet) index(pod *corev1.Pod) int {
	i := strings.LastIndex(pod.Name, "-")
	n, err := strconv.Atoi(pod.Name[i+1:])
	if err != nil || pod.Name[:max(i, 0)] != s.live.Name {
		return -1
	}
	return n - s.start()
}

// owns excludes Pods outside the ordinals (being scaled away): the
// controller counts neither their availability nor their revision.
func (s *statefulSet) owns(pod *corev1.Pod) bool {
	i := s.index(pod)
	return metav1.IsControlledBy(pod, s.live) && i >= 0 && i < replicasOf(s.live.Spec.Replicas)
}
func (s *statefulSet) listOptions(o *metav1.ListOptions) { o.LabelSelector = s.sel.String() }
func (s *statefulSet) revisionLabels() map[string]string {
	return map[string]string{appsv1.ControllerRevisionHashLabelKey: s.revision}
}

// eligible: the partition counts from the first ordinal, as the controller
// counts it.
func (s *statefulSet) eligible(pod *corev1.Pod) bool { return s.index(pod) >= s.partition }
func (s *statefulSet) ordinal(pod *corev1.Pod) int   { return s.index(pod) }
func (s *statefulSet) minReadySeconds() int32        { return s.live.Spec.MinReadySeconds }
func (s *statefulSet) expected() int                 { return replicasOf(s.live.Spec.Replicas) }

// maxUnavailable is the StatefulSet controller's: Git's value (the hold
// replaces the live strategy), default 1, a percentage of replicas rounded
// down, at least 1 (getStatefulSetMaxUnavailable), for Parallel and
// OrderedReady alike.
func (s *statefulSet) maxUnavailable() (int, error) {
	var sts appsv1.StatefulSet
	if err := fromUnstructured(s.change.Desired, &sts); err != nil {
		return 0, fmt.Errorf("%s: %w", s.change.Ref, err)
	}
	var v *intstr.IntOrString
	if ru := sts.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		v = ru.MaxUnavailable
	}
	n, err := ResolveMaxUnavailable(v, intstr.FromInt32(1), replicasOf(s.live.Spec.Replicas), RoundDown)
	if err != nil {
		return 0, fmt.Errorf("%s: maxUnavailable: %w", s.change.Ref, err)
	}
	return max(n, 1), nil
}

func (s *statefulSet) progressDeadline() time.Duration { return 0 } // the Options deadline applies

func (s *statefulSet) refresh(ctx context.Context) error {
	live, err := s.e.client.AppsV1().StatefulSets(s.change.Ref.Namespace).Get(ctx, s.change.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("%s: %w", s.change.Ref, err)
	}
	s.live = live
	return nil
}

func (s *statefulSet) release(ctx context.Context) error {
	_, err := s.e.applyObject(ctx, statefulSetGVR, s.change.Desired)
	return err
}
