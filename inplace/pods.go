package inplace

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// StateAnnotation on a Pod records an in-place update refit made: what it
// patched and what the containers were before, so that a restarted refit can
// tell a finished restart from one that has not happened yet.
const StateAnnotation = "refit.dev/inplace-state"

// GateCondition is the readiness gate refit owns when a template lists it.
const GateCondition corev1.PodConditionType = "InPlaceUpdateReady"

// PodState is the content of StateAnnotation.
type PodState struct {
	// Revision identifies the target (a hash of the target images).
	Revision string `json:"revision"`
	// Containers patched, by name.
	Containers map[string]ContainerBefore `json:"containers"`
	PatchedAt  time.Time                  `json:"patchedAt"`
}

// ContainerBefore is one patched container: its images and what the
// container looked like before the patch.
type ContainerBefore struct {
	From         string `json:"from"`
	To           string `json:"to"`
	Init         bool   `json:"init,omitempty"`
	ImageID      string `json:"imageID,omitempty"`
	ContainerID  string `json:"containerID,omitempty"`
	RestartCount int32  `json:"restartCount"`
}

// ReadState returns the Pod's recorded in-place update, if any.
func ReadState(pod *corev1.Pod) (*PodState, bool) {
	raw, ok := pod.Annotations[StateAnnotation]
	if !ok {
		return nil, false
	}
	var s PodState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, false
	}
	return &s, true
}

// Target is the images a rollout moves Pods to, by container name.
type Target struct {
	Revision   string
	Containers map[string]string
	Init       map[string]string
}

// specImage returns the image a Pod's spec gives container name.
func specImage(pod *corev1.Pod, name string, init bool) (string, int, bool) {
	list := pod.Spec.Containers
	if init {
		list = pod.Spec.InitContainers
	}
	for i, c := range list {
		if c.Name == name {
			return c.Image, i, true
		}
	}
	return "", -1, false
}

func containerStatus(pod *corev1.Pod, name string, init bool) *corev1.ContainerStatus {
	list := pod.Status.ContainerStatuses
	if init {
		list = pod.Status.InitContainerStatuses
	}
	for i := range list {
		if list[i].Name == name {
			return &list[i]
		}
	}
	return nil
}

// SpecAtTarget reports whether the Pod's spec already names every target
// image.
func (t Target) SpecAtTarget(pod *corev1.Pod) bool {
	for name, img := range t.Containers {
		if cur, _, ok := specImage(pod, name, false); !ok || cur != img {
			return false
		}
	}
	for name, img := range t.Init {
		if cur, _, ok := specImage(pod, name, true); !ok || cur != img {
			return false
		}
	}
	return true
}

// Phase is where one Pod stands in a rollout.
type Phase string

const (
	// PhaseOld: still on the old images, not patched.
	PhaseOld Phase = "Old"
	// PhaseRestarting: patched; its containers have not all restarted.
	PhaseRestarting Phase = "Restarting"
	// PhaseDone: runs the target images.
	PhaseDone Phase = "Done"
	// PhaseFailed: a patched container cannot start (see Reason).
	PhaseFailed Phase = "Failed"
)

// failureReasons are waiting reasons that will not resolve by waiting.
var failureReasons = map[string]bool{
	"ErrImagePull":               true,
	"ImagePullBackOff":           true,
	"InvalidImageName":           true,
	"ErrImageNeverPull":          true,
	"CrashLoopBackOff":           true,
	"CreateContainerError":       true,
	"CreateContainerConfigError": true,
	"RunContainerError":          true,
}

// PodPhase places a Pod in the rollout to target. A Pod at the target spec
// without refit's state annotation was created from the new template and
// is Done once Ready. A patched Pod is Done when every patched container
// runs a new container (a new container ID or a higher restart count: this
// also completes a retag that kept the same image ID) and is ready. It never
// depends on how the runtime spells the image, so it cannot hang on
// "nginx" versus "docker.io/library/nginx:latest".
func PodPhase(pod *corev1.Pod, target Target, now time.Time, deadline time.Duration) (Phase, string) {
	if !target.SpecAtTarget(pod) {
		return PhaseOld, ""
	}
	state, patched := ReadState(pod)
	if !patched {
		// Created from the new template.
		if reason := waitingFailure(pod, target); reason != "" {
			return PhaseFailed, reason
		}
		return PhaseDone, ""
	}
	for name, before := range state.Containers {
		if cur, _, _ := specImage(pod, name, before.Init); cur != before.To {
			continue // a record of an earlier rollout; the spec moved on
		}
		cs := containerStatus(pod, name, before.Init)
		if cs == nil {
			return PhaseRestarting, ""
		}
		if cs.State.Waiting != nil && failureReasons[cs.State.Waiting.Reason] {
			return PhaseFailed, fmt.Sprintf("container %s: %s: %s", name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		}
		restarted := cs.ContainerID != before.ContainerID || cs.RestartCount > before.RestartCount
		if !restarted || cs.State.Running == nil || !cs.Ready {
			if deadline > 0 && now.Sub(state.PatchedAt) > deadline {
				return PhaseFailed, fmt.Sprintf("container %s did not restart on %s within the progress deadline of %s", name, before.To, deadline)
			}
			return PhaseRestarting, ""
		}
	}
	return PhaseDone, ""
}

// RestartPending reports whether a container refit patched (for whatever
// target) has not restarted on its patched image yet: the kubelet is about
// to take the Pod down.
func RestartPending(pod *corev1.Pod) bool {
	state, ok := ReadState(pod)
	if !ok {
		return false
	}
	for name, before := range state.Containers {
		if cur, _, _ := specImage(pod, name, before.Init); cur != before.To {
			continue
		}
		cs := containerStatus(pod, name, before.Init)
		if cs == nil {
			return true
		}
		restarted := cs.ContainerID != before.ContainerID || cs.RestartCount > before.RestartCount
		if !restarted || cs.State.Running == nil || !cs.Ready {
			return true
		}
	}
	return false
}

func waitingFailure(pod *corev1.Pod, target Target) string {
	for name := range target.Containers {
		if cs := containerStatus(pod, name, false); cs != nil && cs.State.Waiting != nil && failureReasons[cs.State.Waiting.Reason] {
			return fmt.Sprintf("container %s: %s", name, cs.State.Waiting.Reason)
		}
	}
	return ""
}

// PodAvailable reports the Pod's Ready condition; with minReadySeconds the Pod
// must have been ready that long to count as available, as for the
// workload controllers.
func PodAvailable(pod *corev1.Pod, minReadySeconds int32, now time.Time) bool {
	if pod.DeletionTimestamp != nil {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status != corev1.ConditionTrue {
				return false
			}
			return minReadySeconds == 0 || now.Sub(c.LastTransitionTime.Time) >= time.Duration(minReadySeconds)*time.Second
		}
	}
	return false
}

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// PodPatch builds the one write that updates a Pod in place: for each target
// container a test of the image seen (so a concurrent change is never
// overwritten) and the new image, the labels given (revision labels of
// StatefulSet and DaemonSet Pods), and refit's state annotation.
func PodPatch(pod *corev1.Pod, target Target, labels map[string]string, now time.Time) ([]byte, error) {
	state := PodState{Revision: target.Revision, Containers: map[string]ContainerBefore{}, PatchedAt: now.UTC().Truncate(time.Second)}
	var ops []jsonPatchOp
	add := func(images map[string]string, init bool) error {
		list := "containers"
		if init {
			list = "initContainers"
		}
		for name, img := range images {
			cur, i, ok := specImage(pod, name, init)
			if !ok {
				return fmt.Errorf("pod %s has no container %s", pod.Name, name)
			}
			if cur == img {
				continue
			}
			path := fmt.Sprintf("/spec/%s/%d/image", list, i)
			ops = append(ops, jsonPatchOp{Op: "test", Path: path, Value: cur}, jsonPatchOp{Op: "replace", Path: path, Value: img})
			before := ContainerBefore{From: cur, To: img, Init: init}
			if cs := containerStatus(pod, name, init); cs != nil {
				before.ImageID, before.ContainerID, before.RestartCount = cs.ImageID, cs.ContainerID, cs.RestartCount
			}
			state.Containers[name] = before
		}
		return nil
	}
	if err := add(target.Containers, false); err != nil {
		return nil, err
	}
	if err := add(target.Init, true); err != nil {
		return nil, err
	}
	if len(pod.Labels) == 0 && len(labels) > 0 {
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/labels", Value: map[string]string{}})
	}
	for k, v := range labels {
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/labels/" + escapePointer(k), Value: v})
	}
	raw, err := json.Marshal(state)
	if err != nil {
		return nil, err
	}
	if len(pod.Annotations) == 0 {
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{StateAnnotation: string(raw)}})
	} else {
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(StateAnnotation), Value: string(raw)})
	}
	return json.Marshal(ops)
}

// RevertPatch builds the write that puts a patched Pod back on the images
// it had before (an in-place rollback).
func RevertPatch(pod *corev1.Pod, state *PodState, labels map[string]string, now time.Time) ([]byte, error) {
	back := Target{Revision: state.Revision + "-rollback", Containers: map[string]string{}, Init: map[string]string{}}
	for name, c := range state.Containers {
		if c.Init {
			back.Init[name] = c.From
		} else {
			back.Containers[name] = c.From
		}
	}
	return PodPatch(pod, back, labels, now)
}
