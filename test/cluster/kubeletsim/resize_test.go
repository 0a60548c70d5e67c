package kubeletsim

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func list(cpu, mem string) corev1.ResourceList {
	return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)}
}

// running is a Pod of one container "a" whose status reports the resources
// it started with (cpu, mem as requests and limits) and whose spec asks for
// wantCPU, wantMem.
func running(uid, cpu, mem, wantCPU, wantMem string) *corev1.Pod {
	have := corev1.ResourceRequirements{Requests: list(cpu, mem), Limits: list(cpu, mem)}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: uid, UID: types.UID(uid), Generation: 2},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "nginx:1",
			Resources: corev1.ResourceRequirements{Requests: list(wantCPU, wantMem), Limits: list(wantCPU, wantMem)}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, QOSClass: corev1.PodQOSGuaranteed, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "a", Image: "nginx:1", ContainerID: "kwok://1", Ready: true,
			State:              corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
			AllocatedResources: list(cpu, mem), Resources: &have,
		}}},
	}
}

func restartOn(p *corev1.Pod, name corev1.ResourceName) *corev1.Pod {
	p.Spec.Containers[0].ResizePolicy = []corev1.ContainerResizePolicy{{ResourceName: name, RestartPolicy: corev1.RestartContainer}}
	return p
}

func inProgress(p *corev1.Pod, since time.Time) *corev1.Pod {
	p.Status.ContainerStatuses[0].AllocatedResources = p.Spec.Containers[0].Resources.Requests.DeepCopy()
	p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: corev1.PodResizeInProgress, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(since)})
	return p
}

func TestPlanResize(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}, Status: corev1.NodeStatus{Allocatable: list("4", "8Gi")}}
	static := node.DeepCopy()
	static.Annotations = map[string]string{CPUManagerPolicyAnnotation: "static"}
	waiting := inProgress(restartOn(running("p", "1", "1Gi", "1", "2Gi"), corev1.ResourceMemory), now.Add(-time.Second))
	waiting.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	pending := running("p", "1", "1Gi", "1", "1Gi")
	pending.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: corev1.PodReasonDeferred}}
	for _, tc := range []struct {
		name   string
		pod    *corev1.Pod
		node   *corev1.Node
		others []*corev1.Pod
		want   ResizeDecision
	}{
		{"nothing asked", running("p", "1", "1Gi", "1", "1Gi"), node, nil, ResizeDecision{Step: ResizeNone}},
		{"cpu up, no restart by default", running("p", "1", "1Gi", "2", "1Gi"), node, nil, ResizeDecision{Step: ResizeAccept}},
		{"memory up with RestartContainer for memory", restartOn(running("p", "1", "1Gi", "1", "2Gi"), corev1.ResourceMemory), node, nil,
			ResizeDecision{Step: ResizeAccept, Restart: []string{"a"}}},
		{"cpu up with RestartContainer only for memory", restartOn(running("p", "1", "1Gi", "2", "1Gi"), corev1.ResourceMemory), node, nil,
			ResizeDecision{Step: ResizeAccept}},
		{"does not fit beside the other Pods: Deferred", running("p", "1", "1Gi", "3", "1Gi"), node, []*corev1.Pod{running("q", "2", "1Gi", "2", "1Gi")},
			ResizeDecision{Step: ResizePending, Reason: corev1.PodReasonDeferred, Message: "Node didn't have enough resource: cpu, requested: 3000, used: 2000, capacity: 4000"}},
		{"the Pod's own requests do not count against it", running("p", "1", "1Gi", "3", "1Gi"), node, []*corev1.Pod{running("p", "1", "1Gi", "1", "1Gi")},
			ResizeDecision{Step: ResizeAccept}},
		{"Guaranteed cpu change on a static CPU manager node: Infeasible", running("p", "1", "1Gi", "2", "1Gi"), static, nil,
			ResizeDecision{Step: ResizePending, Reason: corev1.PodReasonInfeasible, Message: `Resize is infeasible for Guaranteed Pods alongside CPU Manager policy "static"`}},
		{"Guaranteed memory change on a static CPU manager node: fine", running("p", "1", "1Gi", "1", "2Gi"), static, nil, ResizeDecision{Step: ResizeAccept}},
		{"in progress, restart not done yet", waiting, node, nil, ResizeDecision{Step: ResizeNone}},
		{"in progress, actuation time not over", inProgress(running("p", "1", "1Gi", "2", "1Gi"), now.Add(-100*time.Millisecond)), node, nil,
			ResizeDecision{Step: ResizeNone, After: 200 * time.Millisecond}},
		{"in progress and actuated: finish", inProgress(running("p", "1", "1Gi", "2", "1Gi"), now.Add(-time.Second)), node, nil, ResizeDecision{Step: ResizeFinish}},
		{"pending, and the spec went back: clear it", pending, node, nil, ResizeDecision{Step: ResizeFinish}},
		{"not running yet", func() *corev1.Pod {
			p := running("p", "1", "1Gi", "2", "1Gi")
			p.Status.Phase = corev1.PodPending
			return p
		}(), node, nil,
			ResizeDecision{Step: ResizeNone}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanResize(tc.pod, tc.node, tc.others, now, 300*time.Millisecond)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("PlanResize (-want +got):\n%s", diff)
			}
		})
	}
}

func TestResized(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	p := restartOn(running("p", "1", "1Gi", "1", "2Gi"), corev1.ResourceMemory)

	accepted := Resized(p, ResizeDecision{Step: ResizeAccept, Restart: []string{"a"}}, now)
	s := accepted.ContainerStatuses[0]
	if s.State.Waiting == nil || s.Ready || s.LastTerminationState.Terminated == nil || s.LastTerminationState.Terminated.ContainerID != "kwok://1" {
		t.Errorf("accepted with a restart: container %+v, want it stopped (waiting, not ready, last state terminated)", s)
	}
	if !equalLists(s.AllocatedResources, list("1", "2Gi")) || !equalLists(s.Resources.Limits, list("1", "1Gi")) {
		t.Errorf("accepted: allocated %v, resources %v; want the new requests allocated, resources unchanged until actuated", s.AllocatedResources, s.Resources)
	}
	if c := podCondition(&corev1.Pod{Status: *accepted}, corev1.PodResizeInProgress); c == nil || c.ObservedGeneration != 2 || accepted.ObservedGeneration != 2 {
		t.Errorf("accepted: PodResizeInProgress %+v, observedGeneration %d; want the condition at generation 2", c, accepted.ObservedGeneration)
	}
	if c := podCondition(&corev1.Pod{Status: *accepted}, corev1.PodReady); c == nil || c.Status != corev1.ConditionFalse {
		t.Errorf("accepted with a restart: Ready %+v, want False", c)
	}
	if p.Status.ContainerStatuses[0].State.Running == nil {
		t.Error("Resized changed the Pod it was given")
	}

	p.Status = *accepted
	p.Status.ContainerStatuses[0].State = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	done := Resized(p, ResizeDecision{Step: ResizeFinish}, now)
	if c := podCondition(&corev1.Pod{Status: *done}, corev1.PodResizeInProgress); c != nil {
		t.Errorf("finished: PodResizeInProgress still there: %+v", c)
	}
	if r := done.ContainerStatuses[0].Resources; r == nil || !equalLists(r.Limits, list("1", "2Gi")) || !equalLists(r.Requests, list("1", "2Gi")) {
		t.Errorf("finished: resources %v, want the spec's", r)
	}

	pending := Resized(p, ResizeDecision{Step: ResizePending, Reason: corev1.PodReasonDeferred, Message: "m"}, now)
	if c := podCondition(&corev1.Pod{Status: *pending}, corev1.PodResizePending); c == nil || c.Reason != corev1.PodReasonDeferred || c.Message != "m" {
		t.Errorf("pending: PodResizePending %+v, want reason Deferred, message m", c)
	}
}
