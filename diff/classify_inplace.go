package diff

import (
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// Aspect is one kind of change a running Pod takes without being replaced.
type Aspect string

const (
	// AspectImage: container images, patched on the Pod (the kubelet
	// restarts the container).
	AspectImage Aspect = "image"
	// AspectResources: CPU and memory requests and limits, through the
	// Pod's resize subresource (GA since 1.35); the container restarts only
	// where its resizePolicy asks for it.
	AspectResources Aspect = "resources"
	// AspectMetadata: labels and annotations of the Pod template that the
	// selector does not use, patched onto the Pods (no restart).
	AspectMetadata Aspect = "metadata"
)

// aspectOrder is the order aspects are listed in.
var aspectOrder = []Aspect{AspectImage, AspectResources, AspectMetadata}

// ResourceChange is one CPU or memory request or limit of a container that
// changes ("" where it is not set).
type ResourceChange struct {
	Container string `json:"container"`
	// Resource is "requests.cpu", "limits.memory"…
	Resource string `json:"resource"`
	From     string `json:"from,omitempty"`
	To       string `json:"to,omitempty"`
}

// MetadataChange is one label or annotation of the Pod template that is
// added (From ""), changed or removed (To "", Removed set).
type MetadataChange struct {
	// Kind is "label" or "annotation".
	Kind    string `json:"kind"`
	Key     string `json:"key"`
	From    string `json:"from,omitempty"`
	To      string `json:"to,omitempty"`
	Removed bool   `json:"removed,omitempty"`
}

// inPlaceResources are the only resources pods/resize changes.
var inPlaceResources = map[string]bool{"cpu": true, "memory": true}

// restartedAtAnnotation is what kubectl rollout restart writes into a
// template: its whole point is new Pods, so it is never patched in place.
const restartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"

// inPlaceCheck collects, for one workload's fields that differ, what a
// running Pod can take and the first reason it cannot.
type inPlaceCheck struct {
	live, merged map[string]any // the whole objects
	spec         []string       // path of the Pod spec
	aspects      map[Aspect]bool
	images       []ImageChange
	resources    []ResourceChange
	metadata     []MetadataChange
	why          string // set once: the change is structural
	generic      bool   // a field with no specific reason differs
	// containers whose resources differ.
	resized map[string]bool
}

func (k *inPlaceCheck) structural(why string) {
	if k.why == "" && !k.generic {
		k.why = why
	}
}

// field files one differing path.
func (k *inPlaceCheck) field(f string) {
	specPrefix := strings.Join(k.spec, ".") + "."
	podSpec := nestedMap(k.merged, k.spec...)
	if rel, ok := strings.CutPrefix(f, specPrefix); ok {
		if img, ok := imageChange(rel, podSpec); ok {
			img.From = containerImage(nestedMap(k.live, k.spec...), img.Init, img.Container)
			k.images = append(k.images, img)
			k.aspects[AspectImage] = true
			return
		}
		if name, ok := resourcesField(rel); ok {
			k.resized[name] = true
			return
		}
		if name, ok := containerField(rel, "resizePolicy"); ok {
			k.structural(fmt.Sprintf("the resizePolicy of container %s changes (immutable on a Pod)", name))
			return
		}
		if strings.HasPrefix(rel, "initContainers[") && strings.Contains(rel, "].resources") {
			k.structural("resources of an init container change")
			return
		}
	}
	// A workload's template's labels and annotations, or a bare Pod's own.
	meta := strings.Join(append(k.spec[:len(k.spec)-1:len(k.spec)-1], "metadata"), ".")
	for _, m := range []string{meta + ".labels", meta + ".annotations"} {
		if f == m || strings.HasPrefix(f, m+".") {
			k.aspects[AspectMetadata] = true
			return
		}
	}
	// Anything else: the reason is the field list.
	if k.why == "" {
		k.generic = true
	}
}

// resourcesField recognises a path (relative to the Pod spec) under a
// regular container's resources, and returns the container.
func resourcesField(rel string) (string, bool) { return containerField(rel, "resources") }

// containerField recognises a path (relative to the Pod spec) at or under
// field of a regular container, and returns the container.
func containerField(rel, field string) (string, bool) {
	rest, ok := strings.CutPrefix(rel, "containers[name=")
	if !ok {
		return "", false
	}
	name, tail, ok := strings.Cut(rest, "]")
	if !ok || (tail != "."+field && !strings.HasPrefix(tail, "."+field+".") && !strings.HasPrefix(tail, "."+field+"[")) {
		return "", false
	}
	return name, true
}

// finish checks the resources and metadata filed: their changes, or the
// reason the change is structural.
func (k *inPlaceCheck) finish() {
	names := make([]string, 0, len(k.resized))
	for name := range k.resized {
		names = append(names, name)
	}
	sort.Strings(names)
	liveSpec, podSpec := nestedMap(k.live, k.spec...), nestedMap(k.merged, k.spec...)
	for _, name := range names {
		changes, why := resourceChanges(name, container(liveSpec, false, name), container(podSpec, false, name))
		if why != "" {
			k.structural(why)
			continue
		}
		k.resources = append(k.resources, changes...)
		if len(changes) > 0 {
			k.aspects[AspectResources] = true
		}
	}
	if k.aspects[AspectResources] {
		if from, to := QOSClass(liveSpec), QOSClass(podSpec); from != to {
			k.structural(fmt.Sprintf("the QoS class changes from %s to %s (a running Pod keeps its class)", from, to))
		}
	}
	if k.aspects[AspectMetadata] {
		var why string
		k.metadata, why = templateMetadataChanges(k.live, k.merged, k.spec)
		if why != "" {
			k.structural(why)
		}
	}
}

// resourceChanges compares one container's resources: only CPU and memory
// requests and limits may differ, none may be removed, and its
// resizePolicy must stay (it is immutable on a Pod).
func resourceChanges(name string, live, merged map[string]any) ([]ResourceChange, string) {
	lr, _ := live["resources"].(map[string]any)
	mr, _ := merged["resources"].(map[string]any)
	var out []ResourceChange
	keys := map[string]bool{}
	for k := range lr {
		keys[k] = true
	}
	for k := range mr {
		keys[k] = true
	}
	for _, part := range sortedKeys(keys) {
		if part != "requests" && part != "limits" {
			return nil, fmt.Sprintf("resources.%s of container %s change (only CPU and memory requests and limits resize in place)", part, name)
		}
		from, _ := lr[part].(map[string]any)
		to, _ := mr[part].(map[string]any)
		res := map[string]bool{}
		for r := range from {
			res[r] = true
		}
		for r := range to {
			res[r] = true
		}
		for _, r := range sortedKeys(res) {
			a, b := quantityString(from[r]), quantityString(to[r])
			if sameQuantity(a, b) {
				continue
			}
			if !inPlaceResources[r] {
				return nil, fmt.Sprintf("%s %s of container %s changes (only CPU and memory resize in place)", part, r, name)
			}
			if b == "" {
				return nil, fmt.Sprintf("the %s %s of container %s is removed (a running Pod cannot drop it)", r, strings.TrimSuffix(part, "s"), name)
			}
			out = append(out, ResourceChange{Container: name, Resource: part + "." + r, From: a, To: b})
		}
	}
	return out, ""
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func quantityString(v any) string {
	switch q := v.(type) {
	case nil:
		return ""
	case string:
		return q
	default:
		return fmt.Sprint(q)
	}
}

func sameQuantity(a, b string) bool {
	if a == b {
		return true
	}
	qa, errA := resource.ParseQuantity(a)
	qb, errB := resource.ParseQuantity(b)
	return errA == nil && errB == nil && qa.Cmp(qb) == 0
}

// QOSClass is the QoS class the API server gives a Pod of this spec
// (GetPodQOS, CPU and memory only): requests default to limits; no request
// nor limit anywhere is BestEffort; limits equal to requests for both in
// every container is Guaranteed; anything else is Burstable.
func QOSClass(podSpec map[string]any) string {
	var containers []any
	for _, list := range []string{"initContainers", "containers"} {
		items, _ := podSpec[list].([]any)
		containers = append(containers, items...)
	}
	set, guaranteed := false, true
	for _, item := range containers {
		c, _ := item.(map[string]any)
		res, _ := c["resources"].(map[string]any)
		requests, _ := res["requests"].(map[string]any)
		limits, _ := res["limits"].(map[string]any)
		for r := range inPlaceResources {
			req, lim := quantityString(requests[r]), quantityString(limits[r])
			if req == "" {
				req = lim // defaulted from the limit
			}
			if req != "" && !sameQuantity(req, "0") || lim != "" && !sameQuantity(lim, "0") {
				set = true
			}
			if lim == "" || !sameQuantity(req, lim) {
				guaranteed = false
			}
		}
	}
	switch {
	case !set:
		return "BestEffort"
	case guaranteed:
		return "Guaranteed"
	}
	return "Burstable"
}

// templateMetadataChanges lists the template's label and annotation
// changes, or why they cannot be patched onto running Pods: a label the
// selector uses (the Pods would leave or join the workload), or kubectl's
// restartedAt (it asks for new Pods).
func templateMetadataChanges(live, merged map[string]any, spec []string) ([]MetadataChange, string) {
	metaPath := append(spec[:len(spec)-1:len(spec)-1], "metadata")
	lm, mm := nestedMap(live, metaPath...), nestedMap(merged, metaPath...)
	selector := selectorKeys(live, merged)
	var out []MetadataChange
	for _, kind := range []string{"label", "annotation"} {
		field := kind + "s"
		from, _ := lm[field].(map[string]any)
		to, _ := mm[field].(map[string]any)
		keys := map[string]bool{}
		for k := range from {
			keys[k] = true
		}
		for k := range to {
			keys[k] = true
		}
		for _, key := range sortedKeys(keys) {
			a, aok := from[key].(string)
			b, bok := to[key].(string)
			if a == b && aok == bok {
				continue
			}
			if kind == "label" && selector[key] {
				return nil, fmt.Sprintf("label %s is in the selector", key)
			}
			if kind == "annotation" && key == restartedAtAnnotation {
				return nil, fmt.Sprintf("annotation %s asks for new Pods", key)
			}
			out = append(out, MetadataChange{Kind: kind, Key: key, From: a, To: b, Removed: !bok})
		}
	}
	return out, ""
}

// selectorKeys are the label keys a workload's selector reads, on either
// side.
func selectorKeys(objs ...map[string]any) map[string]bool {
	out := map[string]bool{}
	for _, obj := range objs {
		sel := nestedMap(obj, "spec", "selector")
		match, _ := sel["matchLabels"].(map[string]any)
		for k := range match {
			out[k] = true
		}
		exprs, _ := sel["matchExpressions"].([]any)
		for _, e := range exprs {
			if m, ok := e.(map[string]any); ok {
				if k, ok := m["key"].(string); ok {
					out[k] = true
				}
			}
		}
	}
	return out
}

// aspectList is the aspects set, in order.
func aspectList(set map[Aspect]bool) []Aspect {
	var out []Aspect
	for _, a := range aspectOrder {
		if set[a] {
			out = append(out, a)
		}
	}
	return out
}

// AspectsString is "image, resources" for the plan's text.
func AspectsString(aspects []Aspect) string {
	s := make([]string, len(aspects))
	for i, a := range aspects {
		s[i] = string(a)
	}
	return strings.Join(s, ", ")
}

// InPlaceParts describe an in-place change's resources and metadata, one
// part each: "app requests.cpu 100m → 200m", "label tier=front added",
// "annotation owner removed".
func InPlaceParts(c Change) []string {
	var parts []string
	for _, r := range c.Resources {
		from := r.From
		if from == "" {
			from = "unset"
		}
		parts = append(parts, fmt.Sprintf("%s %s %s → %s", r.Container, r.Resource, from, r.To))
	}
	for _, m := range c.Metadata {
		switch {
		case m.Removed:
			parts = append(parts, fmt.Sprintf("%s %s removed", m.Kind, m.Key))
		case m.From == "":
			parts = append(parts, fmt.Sprintf("%s %s=%s added", m.Kind, m.Key, m.To))
		default:
			parts = append(parts, fmt.Sprintf("%s %s %s → %s", m.Kind, m.Key, m.From, m.To))
		}
	}
	return parts
}
