package kubeletsim

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ResizeStep is what the kubelet does next about a Pod's resources.
type ResizeStep string

const (
	// ResizeNone: nothing to do (or nothing yet: a resize in progress waits
	// for its restarts or its actuation time).
	ResizeNone ResizeStep = "None"
	// ResizePending: the node cannot take the new requests (Reason says
	// Infeasible or Deferred); nothing else changes.
	ResizePending ResizeStep = "Pending"
	// ResizeAccept: allocate the new requests, mark PodResizeInProgress and
	// stop the containers whose resizePolicy asks for a restart.
	ResizeAccept ResizeStep = "Accept"
	// ResizeFinish: the resize is actuated: status resources updated,
	// PodResizeInProgress removed.
	ResizeFinish ResizeStep = "Finish"
)

// ResizeDecision is a ResizeStep with its details.
type ResizeDecision struct {
	Step ResizeStep
	// Reason and Message of PodResizePending.
	Reason, Message string
	// Restart names the containers to restart (ResizeAccept).
	Restart []string
	// After is how long to wait before looking again (ResizeNone).
	After time.Duration
}

// PlanResize decides the kubelet's next step for pod's resources on node,
// where others are the other Pods bound to it. A resize is wanted when a
// container's spec resources differ from those its status reports. As the
// kubelet of v1.37 (pkg/kubelet/allocation): a resize the node's CPU or
// memory manager cannot do is Infeasible (a Guaranteed Pod's CPU or memory
// on a node with the static policy: the Node annotations
// kwok.refit.dev/cpu-manager-policy and memory-manager-policy model it); one
// that does not fit beside the other Pods' allocations is Deferred, retried
// whenever the node's Pods change. Requests beyond the node's allocatable
// never get here: the API server's podresize admission refuses them. An
// accepted resize is done once the containers to restart run again and the
// actuation time has passed.
func PlanResize(pod *corev1.Pod, node *corev1.Node, others []*corev1.Pod, now time.Time, actuation time.Duration) ResizeDecision {
	if pod.Status.Phase != corev1.PodRunning {
		return ResizeDecision{Step: ResizeNone}
	}
	if inProgress := podCondition(pod, corev1.PodResizeInProgress); inProgress != nil && allocatedMatchesSpec(pod) {
		if !containersSettled(pod) {
			return ResizeDecision{Step: ResizeNone}
		}
		if wait := inProgress.LastTransitionTime.Add(actuation).Sub(now); wait > 0 {
			return ResizeDecision{Step: ResizeNone, After: wait}
		}
		return ResizeDecision{Step: ResizeFinish}
	}
	if !resizeWanted(pod) {
		if podCondition(pod, corev1.PodResizePending) != nil {
			return ResizeDecision{Step: ResizeFinish} // the spec went back: drop the pending resize
		}
		return ResizeDecision{Step: ResizeNone}
	}
	if pod.Status.QOSClass == corev1.PodQOSGuaranteed {
		for _, m := range []struct {
			annotation, manager string
			resource            corev1.ResourceName
		}{
			{CPUManagerPolicyAnnotation, "CPU Manager", corev1.ResourceCPU},
			{MemoryManagerPolicyAnnotation, "Memory Manager", corev1.ResourceMemory},
		} {
			if node.Annotations[m.annotation] == "static" && requestChanged(pod, m.resource) {
				return ResizeDecision{Step: ResizePending, Reason: corev1.PodReasonInfeasible,
					Message: fmt.Sprintf("Resize is infeasible for Guaranteed Pods alongside %s policy \"static\"", m.manager)}
			}
		}
	}
	want := podRequests(pod, true)
	used := corev1.ResourceList{}
	for _, o := range others {
		if o.UID == pod.UID || o.DeletionTimestamp != nil || o.Status.Phase == corev1.PodSucceeded || o.Status.Phase == corev1.PodFailed {
			continue
		}
		addList(used, podRequests(o, false))
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		capacity, ok := node.Status.Allocatable[name]
		if !ok {
			continue
		}
		req, u := want[name], used[name]
		free := capacity.DeepCopy()
		free.Sub(u)
		if req.Cmp(free) > 0 {
			// The kubelet's predicate message (pkg/kubelet/lifecycle); every
			// reason but Infeasible becomes Deferred.
			return ResizeDecision{Step: ResizePending, Reason: corev1.PodReasonDeferred,
				Message: fmt.Sprintf("Node didn't have enough resource: %s, requested: %d, used: %d, capacity: %d", name, value(name, req), value(name, u), value(name, capacity))}
		}
	}
	var restart []string
	for _, c := range pod.Spec.Containers {
		s := containerStatus(pod, c.Name)
		if s == nil {
			continue
		}
		for _, name := range changedResources(c.Resources, s.Resources) {
			if restartPolicy(c, name) == corev1.RestartContainer {
				restart = append(restart, c.Name)
				break
			}
		}
	}
	return ResizeDecision{Step: ResizeAccept, Restart: restart}
}

// Resized is pod's status after step d at now (a copy; pod is not changed).
func Resized(pod *corev1.Pod, d ResizeDecision, now time.Time) *corev1.PodStatus {
	status := pod.Status.DeepCopy()
	status.ObservedGeneration = pod.Generation
	t := metav1.NewTime(now)
	switch d.Step {
	case ResizePending:
		status.Conditions = setCondition(status.Conditions, corev1.PodCondition{
			Type: corev1.PodResizePending, Status: corev1.ConditionTrue, Reason: d.Reason, Message: d.Message,
			LastTransitionTime: t, ObservedGeneration: pod.Generation,
		})
	case ResizeAccept:
		status.Conditions = removeCondition(status.Conditions, corev1.PodResizePending)
		status.Conditions = setCondition(status.Conditions, corev1.PodCondition{
			Type: corev1.PodResizeInProgress, Status: corev1.ConditionTrue,
			LastTransitionTime: t, ObservedGeneration: pod.Generation,
		})
		for _, c := range pod.Spec.Containers {
			s := statusOf(status, c.Name)
			if s == nil {
				continue
			}
			s.AllocatedResources = c.Resources.Requests.DeepCopy()
			if s.State.Running != nil && containsString(d.Restart, c.Name) {
				// As the in-place image restart in stages.yaml: the
				// pod-container-restart Stage starts it again after the
				// restart delay, restartCount + 1, a new containerID.
				s.LastTerminationState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
					ExitCode: 0, Reason: "Completed", ContainerID: s.ContainerID,
					StartedAt: s.State.Running.StartedAt, FinishedAt: t,
				}}
				s.State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
				s.Ready = false
				started := false
				s.Started = &started
			}
		}
		if len(d.Restart) > 0 {
			// As the kill Stage: the Pod is not ready from the stop on
			// (written here, since kwok plays one Stage per change and
			// the restart may win over pod-ready-recompute).
			for _, t := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
				status.Conditions = setCondition(status.Conditions, corev1.PodCondition{
					Type: t, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: metav1.NewTime(now),
				})
			}
		}
	case ResizeFinish:
		status.Conditions = removeCondition(status.Conditions, corev1.PodResizeInProgress)
		status.Conditions = removeCondition(status.Conditions, corev1.PodResizePending)
		for _, c := range pod.Spec.Containers {
			if s := statusOf(status, c.Name); s != nil {
				s.AllocatedResources = c.Resources.Requests.DeepCopy()
				s.Resources = statusResources(c.Resources)
			}
		}
	}
	return status
}

// Node annotations that model the kubelet's resource managers.
const (
	CPUManagerPolicyAnnotation    = "kwok.refit.dev/cpu-manager-policy"
	MemoryManagerPolicyAnnotation = "kwok.refit.dev/memory-manager-policy"
)

// requestChanged: some container asks for a request of name other than the
// one allocated to it.
func requestChanged(pod *corev1.Pod, name corev1.ResourceName) bool {
	for _, c := range pod.Spec.Containers {
		if s := containerStatus(pod, c.Name); s != nil {
			want, have := c.Resources.Requests[name], s.AllocatedResources[name]
			if want.Cmp(have) != 0 {
				return true
			}
		}
	}
	return false
}

// value is a quantity as the kubelet's messages print it: millicores for
// CPU, bytes otherwise.
func value(name corev1.ResourceName, q resource.Quantity) int64 {
	if name == corev1.ResourceCPU {
		return q.MilliValue()
	}
	return q.Value()
}

// resizeWanted: some container's spec resources differ from its status.
func resizeWanted(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if s := containerStatus(pod, c.Name); s != nil && len(changedResources(c.Resources, s.Resources)) > 0 {
			return true
		}
	}
	return false
}

func allocatedMatchesSpec(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if s := containerStatus(pod, c.Name); s != nil && !equalLists(c.Resources.Requests, s.AllocatedResources) {
			return false
		}
	}
	return true
}

// containersSettled: no container is on its way to (re)start; a container
// stuck on an image pull does not hold the resize up.
func containersSettled(pod *corev1.Pod) bool {
	for _, s := range pod.Status.ContainerStatuses {
		if w := s.State.Waiting; w != nil && w.Reason != "ErrImagePull" && w.Reason != "ImagePullBackOff" {
			return false
		}
	}
	return true
}

// changedResources names the resources whose request or limit differs
// between spec and the status a container reports.
func changedResources(spec corev1.ResourceRequirements, status *corev1.ResourceRequirements) []corev1.ResourceName {
	var have corev1.ResourceRequirements
	if status != nil {
		have = *status
	}
	seen := map[corev1.ResourceName]bool{}
	var out []corev1.ResourceName
	for _, pair := range [][2]corev1.ResourceList{{spec.Requests, have.Requests}, {spec.Limits, have.Limits}} {
		for _, name := range diffNames(pair[0], pair[1]) {
			if !seen[name] {
				seen[name] = true
				out = append(out, name)
			}
		}
	}
	return out
}

func diffNames(a, b corev1.ResourceList) []corev1.ResourceName {
	var out []corev1.ResourceName
	for name, q := range a {
		if o, ok := b[name]; !ok || o.Cmp(q) != 0 {
			out = append(out, name)
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			out = append(out, name)
		}
	}
	return out
}

func equalLists(a, b corev1.ResourceList) bool { return len(diffNames(a, b)) == 0 }

// restartPolicy is the container's resizePolicy for a resource
// (NotRequired unless it says otherwise, as the API defaults it).
func restartPolicy(c corev1.Container, name corev1.ResourceName) corev1.ResourceResizeRestartPolicy {
	for _, p := range c.ResizePolicy {
		if p.ResourceName == name {
			return p.RestartPolicy
		}
	}
	return corev1.NotRequired
}

// podRequests sums the containers' requests: from the spec (what a resize
// asks for) or as allocated (what the node has given the Pod).
func podRequests(pod *corev1.Pod, spec bool) corev1.ResourceList {
	sum := corev1.ResourceList{}
	for _, c := range pod.Spec.Containers {
		req := c.Resources.Requests
		if s := containerStatus(pod, c.Name); !spec && s != nil && s.AllocatedResources != nil {
			req = s.AllocatedResources
		}
		addList(sum, req)
	}
	return sum
}

func addList(sum, add corev1.ResourceList) {
	for name, q := range add {
		total := sum[name]
		if total.IsZero() {
			total = resource.Quantity{Format: q.Format}
		}
		total.Add(q)
		sum[name] = total
	}
}

func statusResources(spec corev1.ResourceRequirements) *corev1.ResourceRequirements {
	if len(spec.Requests) == 0 && len(spec.Limits) == 0 {
		return nil
	}
	return &corev1.ResourceRequirements{Requests: spec.Requests.DeepCopy(), Limits: spec.Limits.DeepCopy()}
}

func containerStatus(pod *corev1.Pod, name string) *corev1.ContainerStatus {
	return statusOf(&pod.Status, name)
}

func statusOf(status *corev1.PodStatus, name string) *corev1.ContainerStatus {
	for i := range status.ContainerStatuses {
		if status.ContainerStatuses[i].Name == name {
			return &status.ContainerStatuses[i]
		}
	}
	return nil
}

func setCondition(conds []corev1.PodCondition, c corev1.PodCondition) []corev1.PodCondition {
	for i := range conds {
		if conds[i].Type == c.Type {
			if conds[i].Status == c.Status && conds[i].Reason == c.Reason {
				c.LastTransitionTime = conds[i].LastTransitionTime
			}
			conds[i] = c
			return conds
		}
	}
	return append(conds, c)
}

func removeCondition(conds []corev1.PodCondition, t corev1.PodConditionType) []corev1.PodCondition {
	out := conds[:0]
	for _, c := range conds {
		if c.Type != t {
			out = append(out, c)
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
