package inplace

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
)

// Resources a rollout changes through pods/resize: a running container's
// CPU and memory requests and limits (GA since 1.35). The API server
// refuses any other resource, a QoS class change and a removed value; the
// plan sends those the ordinary way.

// ContainerResources are the CPU and memory requests and limits a template
// sets for one container, keyed "requests.cpu", "limits.memory"…; requests
// the template leaves out default to its limits, as they do on a Pod.
type ContainerResources map[string]resource.Quantity

// resizedResources are the only resources a resize may touch.
var resizedResources = []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory}

// resourcesOf reads the target resources of a Pod spec's regular
// containers. A value the template does not set is not part of the
// target: a LimitRange may have given the Pods one, and it stays.
func resourcesOf(spec map[string]any) (map[string]ContainerResources, error) {
	out := map[string]ContainerResources{}
	items, _, _ := unstructured.NestedSlice(spec, "containers")
	for _, item := range items {
		c, _ := item.(map[string]any)
		name, _ := c["name"].(string)
		res := ContainerResources{}
		for _, part := range []string{"limits", "requests"} {
			values, _, _ := unstructured.NestedMap(c, "resources", part)
			for _, r := range resizedResources {
				raw, ok := values[string(r)]
				if !ok {
					continue
				}
				q, err := resource.ParseQuantity(fmt.Sprint(raw))
				if err != nil {
					return nil, fmt.Errorf("container %s: %s.%s: %w", name, part, r, err)
				}
				res[part+"."+string(r)] = q
			}
		}
		for _, r := range resizedResources {
			if lim, ok := res["limits."+string(r)]; ok {
				if _, set := res["requests."+string(r)]; !set {
					res["requests."+string(r)] = lim
				}
			}
		}
		if len(res) > 0 {
			out[name] = res
		}
	}
	return out, nil
}

// resourceLines are the target's resources as sorted "name/key=value" lines (for
// the revision hash).
func resourceLines(all map[string]ContainerResources) []string {
	var out []string
	for name, res := range all {
		for key, q := range res {
			out = append(out, "resources/"+name+"/"+key+"="+q.String())
		}
	}
	sort.Strings(out)
	return out
}

// quantityIn returns the value key ("requests.cpu") of a ResourceRequirements.
func quantityIn(r *corev1.ResourceRequirements, key string) (resource.Quantity, bool) {
	if r == nil {
		return resource.Quantity{}, false
	}
	part, name, _ := strings.Cut(key, ".")
	list := r.Requests
	if part == "limits" {
		list = r.Limits
	}
	q, ok := list[corev1.ResourceName(name)]
	return q, ok
}

// resourcesMatch reports whether r has every value of want.
func resourcesMatch(r *corev1.ResourceRequirements, want ContainerResources) bool {
	for key, q := range want {
		got, ok := quantityIn(r, key)
		if !ok || got.Cmp(q) != 0 {
			return false
		}
	}
	return true
}

func podContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// resourcesAtTarget reports whether the Pod's spec asks for the target
// resources.
func (t Target) resourcesAtTarget(pod *corev1.Pod) bool {
	for name, want := range t.Resources {
		c := podContainer(pod, name)
		if c == nil || !resourcesMatch(&c.Resources, want) {
			return false
		}
	}
	return true
}

// toResize are the containers whose spec resources differ from the target.
func toResize(pod *corev1.Pod, t Target) []string {
	var out []string
	for name, want := range t.Resources {
		if c := podContainer(pod, name); c != nil && !resourcesMatch(&c.Resources, want) {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// resizeRestarts reports whether the kubelet restarts container c to give
// it want: its resizePolicy says RestartContainer for a resource whose
// value changes (NotRequired is the default).
func resizeRestarts(c *corev1.Container, want ContainerResources) bool {
	for key, q := range want {
		got, ok := quantityIn(&c.Resources, key)
		if ok && got.Cmp(q) == 0 {
			continue
		}
		_, name, _ := strings.Cut(key, ".")
		for _, p := range c.ResizePolicy {
			if string(p.ResourceName) == name && p.RestartPolicy == corev1.RestartContainer {
				return true
			}
		}
	}
	return false
}

// restartsOnUpdate reports whether updating the Pod to the target takes a
// container down: a new image, or a resize its resizePolicy restarts for.
// An update that does not (labels, annotations, a resize in place) needs no
// share of maxUnavailable and no drain.
func restartsOnUpdate(pod *corev1.Pod, t Target) bool {
	for name, img := range t.Containers {
		if cur, _, ok := specImage(pod, name, false); ok && cur != img {
			return true
		}
	}
	for name, img := range t.Init {
		if cur, _, ok := specImage(pod, name, true); ok && cur != img {
			return true
		}
	}
	for name, want := range t.Resources {
		if c := podContainer(pod, name); c != nil && resizeRestarts(c, want) {
			return true
		}
	}
	return false
}

// ResizeBefore is one container a rollout resized: its target and whether
// its resizePolicy restarts it for the change.
type ResizeBefore struct {
	Restart bool `json:"restart,omitempty"`
}

// resizedOf are the containers PodPatch records as resized: those the
// writer just resized, and those whose status (where the node reports it)
// does not show the target yet, so a resize made by a refit stopped before
// its state write still needs its evidence.
func resizedOf(pod *corev1.Pod, t Target, resized map[string]ResizeBefore) map[string]ResizeBefore {
	out := map[string]ResizeBefore{}
	for name, b := range resized {
		out[name] = b
	}
	for name, want := range t.Resources {
		if _, ok := out[name]; ok {
			continue
		}
		if cs := containerStatus(pod, name, false); cs != nil && cs.Resources != nil && !resourcesMatch(cs.Resources, want) {
			out[name] = ResizeBefore{}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// ResizePatch builds the JSON patch for a Pod's resize subresource: for
// each container to resize, a test of the resources seen (a concurrent
// change is never overwritten) and the target values set, other values
// kept. It returns nil when nothing needs resizing, and what it resizes.
func ResizePatch(pod *corev1.Pod, t Target) ([]byte, map[string]ResizeBefore, error) {
	names := toResize(pod, t)
	if len(names) == 0 {
		return nil, nil, nil
	}
	ops := uidTest(pod)
	resized := map[string]ResizeBefore{}
	for _, name := range names {
		_, i, _ := specImage(pod, name, false)
		c := &pod.Spec.Containers[i]
		cur := c.Resources.DeepCopy()
		next := c.Resources.DeepCopy()
		for key, q := range t.Resources[name] {
			part, res, _ := strings.Cut(key, ".")
			list := &next.Requests
			if part == "limits" {
				list = &next.Limits
			}
			if *list == nil {
				*list = corev1.ResourceList{}
			}
			(*list)[corev1.ResourceName(res)] = q
		}
		path := fmt.Sprintf("/spec/containers/%d/resources", i)
		ops = append(ops, jsonPatchOp{Op: "test", Path: path, Value: cur}, jsonPatchOp{Op: "replace", Path: path, Value: next})
		resized[name] = ResizeBefore{Restart: resizeRestarts(c, t.Resources[name])}
	}
	raw, err := json.Marshal(ops)
	return raw, resized, err
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t && pod.Status.Conditions[i].Status == corev1.ConditionTrue {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}

// resizePhase places a Pod at the target spec with respect to its
// resources. A container this rollout resized (state.Resized) is done only
// on the node's evidence: its status resources are the target, no resize
// is pending or in progress, and the node has seen the Pod's latest spec
// (where it reports observedGeneration). A resize the node finds
// Infeasible fails at once (waiting does not help: the node lacks the
// room); one it defers fails at the progress deadline.
func resizePhase(pod *corev1.Pod, state *PodState, t Target, rollout string, now time.Time, deadline time.Duration) (Phase, string) {
	if len(t.Resources) == 0 {
		return PhaseDone, ""
	}
	ours := state != nil && state.Rollout == rollout
	// A pending resize the node reported for an older spec (a rollback
	// that resized back) says nothing of this one: wait for the node.
	if c := podCondition(pod, corev1.PodResizePending); c != nil && c.ObservedGeneration > 0 && c.ObservedGeneration < pod.Generation {
		if ours && deadline > 0 && now.Sub(state.PatchedAt) > deadline {
			return PhaseFailed, fmt.Sprintf("the node did not look at the resize within the progress deadline of %s%s", deadline, resizeCondition(pod))
		}
		return PhaseRestarting, ""
	}
	if c := podCondition(pod, corev1.PodResizePending); c != nil {
		if c.Reason == corev1.PodReasonInfeasible {
			return PhaseFailed, fmt.Sprintf("resize %s: %s", c.Reason, c.Message)
		}
		if ours && deadline > 0 && now.Sub(state.PatchedAt) > deadline {
			return PhaseFailed, fmt.Sprintf("resize %s by the node past the progress deadline of %s: %s", c.Reason, deadline, c.Message)
		}
		return PhaseRestarting, ""
	}
	waiting := podCondition(pod, corev1.PodResizeInProgress) != nil
	if seen, ok := generationSeen(pod, pod.Generation); ok && !seen && len(Resized(state, rollout)) > 0 {
		waiting = true
	}
	for name, want := range t.Resources {
		cs := containerStatus(pod, name, false)
		_, resized := Resized(state, rollout)[name]
		switch {
		case resized && (cs == nil || cs.Resources == nil || !resourcesMatch(cs.Resources, want) || !cs.Ready):
			waiting = true
		case cs != nil && cs.Resources != nil && !resourcesMatch(cs.Resources, want):
			waiting = true // the node reports other resources than the spec's
		}
	}
	if !waiting {
		return PhaseDone, ""
	}
	if ours && deadline > 0 && now.Sub(state.PatchedAt) > deadline {
		return PhaseFailed, fmt.Sprintf("the node did not report the new resources within the progress deadline of %s%s", deadline, resizeCondition(pod))
	}
	return PhaseRestarting, ""
}

// Resized are the containers the state's rollout resized, if state is
// rollout's.
func Resized(state *PodState, rollout string) map[string]ResizeBefore {
	if state == nil || state.Rollout != rollout {
		return nil
	}
	return state.Resized
}

// quietUpdate reports whether a Pod's update takes no container down:
// before its patch, from its spec; after, from what its state recorded.
func quietUpdate(pod *corev1.Pod, state *PodState, t Target, rollout string) bool {
	if state != nil && state.Rollout == rollout && t.SpecAtTarget(pod) {
		for name, before := range state.Containers {
			if cur, _, _ := specImage(pod, name, before.Init); cur == before.To {
				return false
			}
		}
		for _, r := range state.Resized {
			if r.Restart {
				return false
			}
		}
		return true
	}
	return !restartsOnUpdate(pod, t)
}

// quietTemplate reports whether moving Pods of this template to the target
// takes no container down (metadata, resizes without restart): such a
// rollout needs no share of maxUnavailable, so a bound of 0 does not stop it.
func quietTemplate(tmpl *corev1.PodTemplateSpec, t Target) bool {
	return !restartsOnUpdate(&corev1.Pod{Spec: tmpl.Spec}, t)
}

// resizeCondition is what the node says of a resize it works on, for a
// failure's reason, or "".
func resizeCondition(pod *corev1.Pod) string {
	for _, t := range []corev1.PodConditionType{corev1.PodResizeInProgress, corev1.PodResizePending} {
		if c := podCondition(pod, t); c != nil {
			return fmt.Sprintf(" (%s %s: %s)", t, c.Reason, c.Message)
		}
	}
	return ""
}

// resizeStall names the first updating Pod whose node reports a resize
// condition: why a rollout made no progress.
func resizeStall(pods []*corev1.Pod, phases map[types.UID]Phase) string {
	for _, pod := range pods {
		if phases[pod.UID] == PhaseRestarting {
			if c := resizeCondition(pod); c != "" {
				return "; Pod " + pod.Name + c
			}
		}
	}
	return ""
}
