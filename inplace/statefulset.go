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
	e      *Engine
	change diff.Change
	target Target

	live      *appsv1.StatefulSet
	sel       labels.Selector
	revision  string
	partition int // from Git: ordinals below it are not updated
	rec       rolloutRecord
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
		switch {
		case live.Status.ObservedGeneration < live.Generation:
			return "the StatefulSet controller has not yet observed the last change", nil
		case live.Status.CurrentRevision != live.Status.UpdateRevision:
			return "a rollout of the StatefulSet is in progress", nil
		}
		rec = rolloutRecord{StartedAt: s.e.now().UTC().Truncate(time.Second),
			Previous: map[string]string{appsv1.ControllerRevisionHashLabelKey: live.Status.CurrentRevision}}
	}
	rec.Revision = s.target.Revision
	if s.sel, err = metav1.LabelSelectorAsSelector(live.Spec.Selector); err != nil {
		return "", fmt.Errorf("%s: selector: %w", ref, err)
	}
	p, _, _ := unstructured.NestedInt64(s.change.Desired.Object, "spec", "updateStrategy", "rollingUpdate", "partition")
	s.partition = int(p)
	s.rec = rec
	return "", nil
}

func (s *statefulSet) prepare(ctx context.Context) error {
	ref, live := s.change.Ref, s.live
	held, err := withRecord(s.change.Desired, s.rec)
	if err != nil {
		return err
	}
	if live.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType {
		replicas := int64(1)
		if live.Spec.Replicas != nil {
			replicas = int64(*live.Spec.Replicas)
		}
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

func (s *statefulSet) owns(pod *corev1.Pod) bool { return metav1.IsControlledBy(pod, s.live) }
func (s *statefulSet) selector() labels.Selector { return s.sel }
func (s *statefulSet) revisionLabels() map[string]string {
	return map[string]string{appsv1.ControllerRevisionHashLabelKey: s.revision}
}
func (s *statefulSet) eligible(pod *corev1.Pod) bool { return s.ordinal(pod) >= s.partition }
func (s *statefulSet) minReadySeconds() int32        { return s.live.Spec.MinReadySeconds }

func (s *statefulSet) ordinal(pod *corev1.Pod) int {
	i := strings.LastIndex(pod.Name, "-")
	n, err := strconv.Atoi(pod.Name[i+1:])
	if err != nil {
		return -1
	}
	return n
}

func (s *statefulSet) maxUnavailable() (int, error) {
	if s.live.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		return 1, nil // OrderedReady: one Pod at a time
	}
	replicas := 1
	if s.live.Spec.Replicas != nil {
		replicas = int(*s.live.Spec.Replicas)
	}
	var v *intstr.IntOrString
	if ru := s.live.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		v = ru.MaxUnavailable
	}
	n, err := ResolveMaxUnavailable(v, intstr.FromInt32(1), replicas, RoundUp)
	if err != nil {
		return 0, fmt.Errorf("%s: maxUnavailable: %w", s.change.Ref, err)
	}
	return max(n, 1), nil
}

func (s *statefulSet) progressDeadline() time.Duration { return 0 } // the Options deadline applies
func (s *statefulSet) check(context.Context) error     { return nil }

func (s *statefulSet) release(ctx context.Context) error {
	_, err := s.e.applyObject(ctx, statefulSetGVR, s.change.Desired)
	return err
}

func (s *statefulSet) previousLabels() map[string]string { return s.rec.Previous }
