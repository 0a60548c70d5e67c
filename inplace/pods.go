package inplace

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// StateAnnotation on a Pod records an in-place update refit made: which
// rollout, what it patched and what the containers were before, so that a
// restarted refit can tell a finished restart from one that has not
// happened yet.
const StateAnnotation = "refit.dev/inplace-state"

// GateCondition is the readiness gate refit owns when a template lists it.
const GateCondition corev1.PodConditionType = "InPlaceUpdateReady"

// PodState is the content of StateAnnotation. It is only evidence for the
// rollout and the Pod it names: a state left by an earlier rollout, or copied
// onto a recreated Pod of the same name, is ignored.
type PodState struct {
	// Rollout is the ID of the rollout that wrote it (the workload's record).
	Rollout string `json:"rollout,omitempty"`
	// UID of the Pod it was written on.
	UID types.UID `json:"uid,omitempty"`
	// Revision identifies the target (a hash of the target images).
	Revision string `json:"revision"`
	// Generation is the Pod's metadata.generation the patch produced; a
	// status whose observedGeneration is lower predates the patch.
	Generation int64 `json:"generation,omitempty"`
	// Containers patched, by name.
	Containers map[string]ContainerBefore `json:"containers"`
	// Resized are the containers whose resources the rollout changed
	// (resize.go): done only once the node reports them.
	Resized   map[string]ResizeBefore `json:"resized,omitempty"`
	PatchedAt time.Time               `json:"patchedAt"`
}

// ContainerBefore is one patched container: its images and what the
// container looked like before the patch.
type ContainerBefore struct {
	From string `json:"from"`
	To   string `json:"to"`
	// Origin is the image the container ran before this rollout first
	// touched it (a re-targeted rollout patches a Pod twice).
	Origin       string `json:"origin,omitempty"`
	Init         bool   `json:"init,omitempty"`
	ImageID      string `json:"imageID,omitempty"`
	ContainerID  string `json:"containerID,omitempty"`
	RestartCount int32  `json:"restartCount"`
}

// ReadState returns the Pod's recorded in-place update, if any, whichever
// rollout wrote it.
func ReadState(pod *corev1.Pod) (*PodState, bool) {
	raw, ok := pod.Annotations[StateAnnotation]
	if !ok {
		return nil, false
	}
	var s PodState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, false
	}
	if s.UID != "" && s.UID != pod.UID {
		return nil, false // copied onto another Pod (recreated under the same name)
	}
	return &s, true
}

// stateOf returns the Pod's state if rollout wrote it.
func stateOf(pod *corev1.Pod, rollout string) (*PodState, bool) {
	s, ok := ReadState(pod)
	if !ok || s.Rollout != rollout {
		return nil, false
	}
	return s, true
}

// Target is what a rollout moves Pods to: images by container name, and
// the template's CPU and memory (resize.go) and labels and annotations
// (metadata.go).
type Target struct {
	Revision   string
	Containers map[string]string
	Init       map[string]string
	// Resources of regular containers, by name: only the values the
	// template sets.
	Resources map[string]ContainerResources
	// Labels and Annotations the Pods carry; the Remove lists are keys the
	// template dropped.
	Labels, Annotations             map[string]string
	RemoveLabels, RemoveAnnotations []string
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
// image, asks for the target resources and carries the target metadata.
func (t Target) SpecAtTarget(pod *corev1.Pod) bool {
	return t.imagesAtTarget(pod) && t.resourcesAtTarget(pod) && t.metadataAtTarget(pod)
}

func (t Target) imagesAtTarget(pod *corev1.Pod) bool {
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

// NormalizeImage spells an image reference the way container runtimes
// report it: "nginx" and "nginx:latest" are "docker.io/library/nginx:latest".
// A reference it cannot parse is returned as it is.
func NormalizeImage(image string) string {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return image
	}
	return reference.TagNameOnly(named).String()
}

func sameImage(a, b string) bool { return a == b || NormalizeImage(a) == NormalizeImage(b) }

// Phase is where one Pod stands in a rollout.
type Phase string

const (
	// PhaseOld: still on the old images, not patched.
	PhaseOld Phase = "Old"
	// PhaseRestarting: patched; its containers have not all restarted on
	// the new images.
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

// generationSeen reports whether the Pod's status was written for a spec at
// least as new as generation. Nodes that do not report observedGeneration
// (older kubelets) leave it unknown: ok is false.
func generationSeen(pod *corev1.Pod, generation int64) (seen, ok bool) {
	if pod.Status.ObservedGeneration == 0 || generation == 0 {
		return false, false
	}
	return pod.Status.ObservedGeneration >= generation, true
}

// PodPhase places a Pod in rollout (an ID) to target. It is a pure
// function of the Pod, the target and the clock.
//
// A Pod at the target spec that rollout did not patch was created from the
// new template (or updated by an earlier rollout): it is Done once its status
// is current and it is ready, with no restart of an earlier patch pending.
//
// A Pod rollout patched is Done when every patched container shows evidence
// of the new image, not merely a new container: a container that crashed
// and restarted on the old image near the patch has a new ID too. Evidence
// is a changed imageID, a reported image that is the target (however the
// runtime spells it) where the old one was another, or — for a retag that
// keeps the digest, where nothing else differs — a container started after
// the patch by a kubelet that has seen it. A waiting failure (ErrImagePull,
// CrashLoopBackOff…) counts only once the status reflects the patch, so a
// Pod stuck on a bad image that is patched to a good one is not failed by
// its old status.
func PodPhase(pod *corev1.Pod, target Target, rollout string, now time.Time, deadline time.Duration) (Phase, string) {
	state, _ := ReadState(pod)
	return podPhase(pod, state, target, rollout, now, deadline)
}

// podPhase is PodPhase with the Pod's state (any rollout's, or nil) already
// read: a pass over many Pods parses each state once.
func podPhase(pod *corev1.Pod, state *PodState, target Target, rollout string, now time.Time, deadline time.Duration) (Phase, string) {
	if !target.SpecAtTarget(pod) {
		return PhaseOld, ""
	}
	if state == nil || state.Rollout != rollout {
		if seen, ok := generationSeen(pod, pod.Generation); ok && !seen {
			return PhaseRestarting, ""
		}
		if reason := waitingFailure(pod, target); reason != "" {
			return PhaseFailed, reason
		}
		if restartPending(pod, state) || !podContainersReady(pod) {
			return PhaseRestarting, ""
		}
		return resizePhase(pod, state, target, rollout, now, deadline)
	}
	for name, before := range state.Containers {
		if cur, _, _ := specImage(pod, name, before.Init); cur != before.To {
			continue // not patched by this state's write any more
		}
		cs := containerStatus(pod, name, before.Init)
		// A failure that names another image than the patched one is not
		// this patch's (a rollback's resize can have the node mark the
		// generation seen before it acts on the image).
		if cs != nil && cs.State.Waiting != nil && failureReasons[cs.State.Waiting.Reason] && reflectsPatch(pod, state, cs, before) &&
			(cs.Image == "" || sameImage(cs.Image, before.To)) {
			return PhaseFailed, fmt.Sprintf("container %s: %s: %s", name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		}
		if cs == nil || !runsNewImage(pod, state, cs, before) || !cs.Ready {
			if deadline > 0 && now.Sub(state.PatchedAt) > deadline {
				return PhaseFailed, fmt.Sprintf("container %s did not restart on %s within the progress deadline of %s", name, before.To, deadline)
			}
			return PhaseRestarting, ""
		}
	}
	return resizePhase(pod, state, target, rollout, now, deadline)
}

// reflectsPatch reports whether a container's status was written after the
// kubelet saw the patch: the node says so (observedGeneration), or the
// status names the patched image, or the container moved on.
func reflectsPatch(pod *corev1.Pod, state *PodState, cs *corev1.ContainerStatus, before ContainerBefore) bool {
	if seen, ok := generationSeen(pod, state.Generation); ok {
		return seen
	}
	if sameImage(cs.Image, before.To) && !sameImage(before.To, before.From) {
		return true
	}
	return cs.ContainerID != before.ContainerID || cs.RestartCount > before.RestartCount
}

// runsNewImage reports evidence that a patched container runs its new image.
func runsNewImage(pod *corev1.Pod, state *PodState, cs *corev1.ContainerStatus, before ContainerBefore) bool {
	restarted := cs.ContainerID != before.ContainerID || cs.RestartCount > before.RestartCount
	if !restarted || cs.State.Running == nil {
		return false
	}
	if seen, ok := generationSeen(pod, state.Generation); ok && !seen {
		return false // the status predates the patch
	}
	if before.ImageID != "" && cs.ImageID != "" && cs.ImageID != before.ImageID {
		return true // other content
	}
	if !sameImage(before.To, before.From) && sameImage(cs.Image, before.To) {
		return true // the runtime names the new image
	}
	// The same content (a retag, or the same image spelled another way):
	// a container started after the patch runs the new image, provided the
	// status cannot be a crash-restart under the old name.
	startedAfter := !cs.State.Running.StartedAt.Time.Before(state.PatchedAt.Truncate(time.Second))
	if !startedAfter {
		return false
	}
	if seen, ok := generationSeen(pod, state.Generation); ok {
		return seen
	}
	return !sameImage(cs.Image, before.From) || sameImage(before.To, before.From)
}

// RestartPending reports whether a container refit patched (in whatever
// rollout) has not restarted on its patched image yet: the kubelet is about
// to take the Pod down, or has.
func RestartPending(pod *corev1.Pod) bool {
	state, _ := ReadState(pod)
	return restartPending(pod, state)
}

func restartPending(pod *corev1.Pod, state *PodState) bool {
	if state == nil {
		return false
	}
	for name, before := range state.Containers {
		if cur, _, _ := specImage(pod, name, before.Init); cur != before.To {
			continue
		}
		cs := containerStatus(pod, name, before.Init)
		if cs == nil || !runsNewImage(pod, state, cs, before) || !cs.Ready {
			return true
		}
	}
	return false
}

func waitingFailure(pod *corev1.Pod, target Target) string {
	for name := range target.Containers {
		if cs := containerStatus(pod, name, false); cs != nil && cs.State.Waiting != nil && failureReasons[cs.State.Waiting.Reason] &&
			sameImage(cs.Image, target.Containers[name]) {
			return fmt.Sprintf("container %s: %s: %s", name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
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

// jsonPatchOp is one RFC 6902 operation. Value is always sent: a test of
// null asserts that a member is absent.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value"`
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// PatchInput is what PodPatch needs besides the Pod.
type PatchInput struct {
	Target Target
	// Rollout is the ID recorded in the Pod's state.
	Rollout string
	// Labels are written on the Pod (revision labels of StatefulSet and
	// DaemonSet Pods), over the target's.
	Labels map[string]string
	// Resized are the containers the writer just resized (ResizePatch).
	Resized map[string]ResizeBefore
	Now     time.Time
}

// PodPatch builds the one write that updates a Pod in place: for each target
// container a test of the image seen (so a concurrent change is never
// overwritten) and the new image, the labels given, and refit's state
// annotation. Where the Pod has no labels or annotations yet, a test that
// they are still absent guards the map it adds, so a concurrent writer's
// entries are never replaced; the generation is tested so the state can name
// the generation the patch produces.
func PodPatch(pod *corev1.Pod, in PatchInput) ([]byte, error) {
	state := PodState{Rollout: in.Rollout, UID: pod.UID, Revision: in.Target.Revision,
		Containers: map[string]ContainerBefore{}, PatchedAt: in.Now.UTC()}
	previous, _ := stateOf(pod, in.Rollout)
	ops := uidTest(pod)
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
			before := ContainerBefore{From: cur, To: img, Origin: cur, Init: init}
			if previous != nil {
				if p, ok := previous.Containers[name]; ok && p.Origin != "" {
					before.Origin = p.Origin
				}
			}
			if cs := containerStatus(pod, name, init); cs != nil {
				before.ImageID, before.ContainerID, before.RestartCount = cs.ImageID, cs.ContainerID, cs.RestartCount
			}
			state.Containers[name] = before
		}
		return nil
	}
	if err := add(in.Target.Containers, false); err != nil {
		return nil, err
	}
	if err := add(in.Target.Init, true); err != nil {
		return nil, err
	}
	if len(state.Containers) > 0 && pod.Generation > 0 {
		ops = append(ops, jsonPatchOp{Op: "test", Path: "/metadata/generation", Value: pod.Generation})
		state.Generation = pod.Generation + 1 // a spec change bumps it by one
	}
	state.Resized = resizedOf(pod, in.Target, in.Resized)
	ops = append(ops, mapOps("/metadata/labels", len(pod.Labels) == 0, metadataChanges(pod.Labels, in.Target.Labels, in.Labels))...)
	ops = append(ops, removeOps("/metadata/labels", pod.Labels, in.Target.RemoveLabels)...)
	raw, err := json.Marshal(state)
	if err != nil {
		return nil, err
	}
	ops = append(ops, mapOps("/metadata/annotations", len(pod.Annotations) == 0,
		metadataChanges(pod.Annotations, in.Target.Annotations, map[string]string{StateAnnotation: string(raw)}))...)
	ops = append(ops, removeOps("/metadata/annotations", pod.Annotations, in.Target.RemoveAnnotations)...)
	return json.Marshal(ops)
}

// uidTest is every Pod write's first op: the patch was built for this Pod,
// not for another one recreated under its name since (a StatefulSet's Pod
// has the same name, the same old image and the same first generation).
func uidTest(pod *corev1.Pod) []jsonPatchOp {
	if pod.UID == "" {
		return nil
	}
	return []jsonPatchOp{{Op: "test", Path: "/metadata/uid", Value: pod.UID}}
}

// mapOps sets entries of a string map at path. An empty map may be absent
// (or null) on the server: it is tested and created whole.
func mapOps(path string, empty bool, entries map[string]string) []jsonPatchOp {
	if len(entries) == 0 {
		return nil
	}
	if empty {
		return []jsonPatchOp{{Op: "test", Path: path, Value: nil}, {Op: "add", Path: path, Value: entries}}
	}
	var ops []jsonPatchOp
	for k, v := range entries {
		ops = append(ops, jsonPatchOp{Op: "add", Path: path + "/" + escapePointer(k), Value: v})
	}
	return ops
}
