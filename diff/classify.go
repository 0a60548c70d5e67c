package diff

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// podSpecPath is where a kind that refit can update in place keeps the Pod
// spec, or nil for other kinds.
func podSpecPath(gk schema.GroupKind) []string {
	switch gk {
	case schema.GroupKind{Group: "apps", Kind: "Deployment"},
		schema.GroupKind{Group: "apps", Kind: "StatefulSet"},
		schema.GroupKind{Group: "apps", Kind: "DaemonSet"}:
		return []string{"spec", "template", "spec"}
	case schema.GroupKind{Kind: "Pod"}:
		return []string{"spec"}
	}
	return nil
}

// IsWorkload reports whether refit can update objects of this kind in place.
func IsWorkload(gk schema.GroupKind) bool { return podSpecPath(gk) != nil }

// ignoredPaths never count as a change: the server or other controllers
// own them, and a dry-run moves some of them by itself.
var ignoredPaths = map[string]bool{
	"metadata.managedFields":     true,
	"metadata.resourceVersion":   true,
	"metadata.generation":        true,
	"metadata.creationTimestamp": true,
	"metadata.uid":               true,
	"metadata.selfLink":          true,
	"status":                     true,
	// The DaemonSet registry strategy bumps it on every template change.
	"metadata.annotations.deprecated.daemonset.template.generation": true,
	// refit's own record of an unfinished in-place rollout: not in Git, and
	// removing it would lose the rollout (see package inplace).
	"metadata.annotations." + RolloutAnnotation: true,
	// refit's note that a commit's images failed and were rolled back.
	"metadata.annotations." + RolledBackAnnotation: true,
}

// RolloutAnnotation marks a workload whose Pods refit is updating in place.
// The in-place engine writes and removes it; a plan never counts it as a
// change.
const RolloutAnnotation = "refit.dev/inplace-rollout"

// RolledBackAnnotation marks a workload whose in-place rollout failed and was
// rolled back: the images that failed are not tried again until they change
// (or a by-hand apply asks for it). The in-place engine writes it; a plan
// never counts it as a change.
const RolledBackAnnotation = "refit.dev/inplace-rolled-back"

// Classification is the outcome of comparing a live object with what the
// server would make of the desired one.
type Classification struct {
	// Changed is false when nothing but ignored fields differ.
	Changed bool `json:"changed"`
	// Class is set for workload kinds only.
	Class  Class         `json:"class,omitempty"`
	Images []ImageChange `json:"images,omitempty"`
	// Fields are all the paths that differ (images included).
	Fields []string `json:"fields,omitempty"`
	// PodsAffected is set when a field of the Pod template (or of a bare
	// Pod's spec) differs: applying it replaces Pods unless done in place.
	PodsAffected bool `json:"podsAffected,omitempty"`
	// InPlace lists what a running Pod takes in place, for the classes
	// ImageOnly and PodMutable; Resources and Metadata detail theirs.
	InPlace   []Aspect         `json:"inPlace,omitempty"`
	Resources []ResourceChange `json:"resources,omitempty"`
	Metadata  []MetadataChange `json:"metadata,omitempty"`
	// Why a Structural change of a workload cannot go in place, when a
	// field says more than the list of Fields (a QoS class change, a
	// selector label…).
	Why string `json:"why,omitempty"`
	// UnderRollout is set when the live object carries the record of an
	// in-place rollout (RolloutAnnotation): its hold fields are refit's, and
	// an ordinary apply would release them.
	UnderRollout bool `json:"underRollout,omitempty"`
}

// Classify compares live with merged (the server-side-apply dry-run result)
// for an object of kind gk. It is a pure function of its inputs.
func Classify(gk schema.GroupKind, live, merged map[string]any) Classification {
	var fields []string
	walk("", live, merged, &fields)
	held := underRollout(live)
	if held {
		fields = withoutHolds(fields)
	}
	sort.Strings(fields)
	if len(fields) == 0 {
		return Classification{UnderRollout: held}
	}
	c := Classification{Changed: true, Fields: fields, UnderRollout: held}
	spec := podSpecPath(gk)
	if spec == nil {
		return c
	}
	prefix := strings.Join(spec, ".") + "."
	// The template of a workload; a bare Pod's own spec.
	template := prefix
	if len(spec) > 1 {
		template = strings.Join(spec[:len(spec)-1], ".") + "."
	}
	for _, f := range fields {
		if strings.HasPrefix(f, template) {
			c.PodsAffected = true
		}
	}
	k := &inPlaceCheck{live: live, merged: merged, spec: spec, aspects: map[Aspect]bool{}, resized: map[string]bool{}}
	for _, f := range fields {
		k.field(f)
	}
	k.finish()
	if k.generic || k.why != "" {
		c.Class, c.Why = Structural, k.why
		return c
	}
	c.InPlace, c.Images, c.Resources, c.Metadata = aspectList(k.aspects), k.images, k.resources, k.metadata
	c.Class = ImageOnly
	if len(c.InPlace) != 1 || c.InPlace[0] != AspectImage {
		c.Class = PodMutable
	}
	return c
}

// holdPaths are the fields with which the in-place engine holds a
// workload's controller during a rollout (a Deployment's pause, a
// StatefulSet's partition, a DaemonSet's OnDelete strategy). While a rollout
// is recorded on the live object they are refit's, not a difference from
// Git: a new commit re-targets the rollout instead of releasing the hold.
var holdPaths = []string{"spec.paused", "spec.updateStrategy"}

func underRollout(live map[string]any) bool {
	_, ok := nestedMap(live, "metadata", "annotations")[RolloutAnnotation]
	return ok
}

func withoutHolds(fields []string) []string {
	out := fields[:0]
	for _, f := range fields {
		held := false
		for _, h := range holdPaths {
			held = held || f == h || strings.HasPrefix(f, h+".")
		}
		if !held {
			out = append(out, f)
		}
	}
	return out
}

// imageChange recognises a path (relative to the Pod spec) that is the
// image of a container, or of a restartable init container (a sidecar):
// those are the only Pod spec changes the kubelet applies to a running Pod.
// A regular init container only runs when a Pod is created.
func imageChange(rel string, podSpec map[string]any) (ImageChange, bool) {
	for _, list := range []string{"containers", "initContainers"} {
		prefix := list + "[name="
		if !strings.HasPrefix(rel, prefix) || !strings.HasSuffix(rel, "].image") {
			continue
		}
		name := strings.TrimSuffix(strings.TrimPrefix(rel, prefix), "].image")
		init := list == "initContainers"
		c := container(podSpec, init, name)
		if c == nil {
			return ImageChange{}, false
		}
		if init {
			if policy, _ := c["restartPolicy"].(string); policy != "Always" {
				return ImageChange{}, false
			}
		}
		to, _ := c["image"].(string)
		return ImageChange{Container: name, Init: init, To: to}, true
	}
	return ImageChange{}, false
}

func container(podSpec map[string]any, init bool, name string) map[string]any {
	list := "containers"
	if init {
		list = "initContainers"
	}
	items, _ := podSpec[list].([]any)
	for _, item := range items {
		if m, ok := item.(map[string]any); ok && m["name"] == name {
			return m
		}
	}
	return nil
}

func containerImage(podSpec map[string]any, init bool, name string) string {
	image, _ := container(podSpec, init, name)["image"].(string)
	return image
}

func nestedMap(obj map[string]any, path ...string) map[string]any {
	cur := obj
	for _, p := range path {
		next, ok := cur[p].(map[string]any)
		if !ok {
			return nil
		}
		cur = next
	}
	return cur
}

// walk appends to out the paths at which a and b differ. Lists whose items
// all have a name are matched by name (containers, env, volumes, ports…),
// so a reordering or an insertion reports the item, not every index after it.
func walk(path string, a, b any, out *[]string) {
	if ignoredPaths[path] {
		return
	}
	// A map on one side only differs only if it holds a field that counts:
	// refit's rollout record alone on the live object, with no other
	// annotation in Git, is no change.
	if am, bm, ok := mapAgainstNil(a, b); ok {
		var sub []string
		walk(path, am, bm, &sub)
		if len(sub) > 0 {
			*out = append(*out, path)
		}
		return
	}
	switch av := a.(type) {
	case map[string]any:
		bv, ok := b.(map[string]any)
		if !ok {
			*out = append(*out, path)
			return
		}
		keys := map[string]bool{}
		for k := range av {
			keys[k] = true
		}
		for k := range bv {
			keys[k] = true
		}
		for k := range keys {
			walk(join(path, k), av[k], bv[k], out)
		}
	case []any:
		bv, ok := b.([]any)
		if !ok {
			*out = append(*out, path)
			return
		}
		walkList(path, av, bv, out)
	default:
		if !reflect.DeepEqual(a, b) {
			*out = append(*out, path)
		}
	}
}

// mapAgainstNil returns a and b as maps when one is a map and the other
// absent, the absent one as an empty map.
func mapAgainstNil(a, b any) (map[string]any, map[string]any, bool) {
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	switch {
	case aok && b == nil:
		return am, map[string]any{}, true
	case bok && a == nil:
		return map[string]any{}, bm, true
	}
	return nil, nil, false
}

func walkList(path string, a, b []any, out *[]string) {
	an, aok := byName(a)
	bn, bok := byName(b)
	if aok && bok {
		names := map[string]bool{}
		for n := range an {
			names[n] = true
		}
		for n := range bn {
			names[n] = true
		}
		for n := range names {
			walk(fmt.Sprintf("%s[name=%s]", path, n), an[n], bn[n], out)
		}
		return
	}
	if len(a) != len(b) {
		*out = append(*out, path)
		return
	}
	for i := range a {
		walk(path+"["+strconv.Itoa(i)+"]", a[i], b[i], out)
	}
}

// byName indexes a list of objects by their unique "name" field.
func byName(list []any) (map[string]any, bool) {
	if len(list) == 0 {
		return map[string]any{}, true
	}
	m := make(map[string]any, len(list))
	for _, item := range list {
		obj, ok := item.(map[string]any)
		if !ok {
			return nil, false
		}
		name, ok := obj["name"].(string)
		if !ok || m[name] != nil {
			return nil, false
		}
		m[name] = obj
	}
	return m, true
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Reasons Decide gives for the path of a workload under an in-place
// rollout.
const (
	reasonHoldKept = "in-place rollout under way: the change is applied with its hold kept"
	reasonRetarget = "in-place rollout under way: re-targeted to the new images"
	reasonEnds     = "the in-place rollout under way ends and the controller replaces the Pods under its own strategy"
	reasonStays    = "the in-place rollout under way stays held where it is"
)

// Decide chooses how an update of a workload reaches the cluster, from its
// classification and the workload's policy. It returns an error for an
// unknown policy.
//
// While an in-place rollout is under way (c.UnderRollout), an ordinary apply
// as field manager refit would drop the hold and the rollout record, and
// the controller would then replace the Pods not yet patched. So a change
// that leaves the Pod template alone goes to the in-place engine, which
// writes the whole object with its hold kept and finishes the rollout; a
// structural change ends the rollout on purpose (the apply releases the
// hold and the controller rolls out under its own strategy); a refused one
// changes nothing, so the rollout stays held where it is.
func Decide(c Classification, policy Policy) (Path, string, error) {
	class := c.Class
	switch policy {
	case InPlaceIfPossible, InPlaceOnly, Recreate:
	default:
		return "", "", fmt.Errorf("unknown %s %q (want %s, %s or %s)", PolicyAnnotation, policy, InPlaceIfPossible, InPlaceOnly, Recreate)
	}
	under := func(reason, rollout string) string {
		if c.UnderRollout {
			return reason + ": " + rollout
		}
		return reason
	}
	switch {
	case policy == Recreate && (class.InPlace() || c.UnderRollout):
		return PathRecreate, under("update policy Recreate", reasonEnds), nil
	case class.InPlace() && c.UnderRollout:
		return PathInPlace, reasonRetarget, nil
	case class.InPlace():
		return PathInPlace, "", nil
	case !c.PodsAffected && c.UnderRollout:
		return PathInPlace, reasonHoldKept, nil
	case !c.PodsAffected:
		return PathApply, "Pod template unchanged: no Pod is replaced", nil
	case policy == InPlaceOnly:
		return PathRefused, under(structuralReason(c)+" refused by update policy InPlaceOnly", reasonStays), nil
	default:
		return PathRecreate, under(structuralReason(c), reasonEnds), nil
	}
}

// structuralReason is "structural change", with the reason a workload's
// change cannot go in place when Classify knows more than the fields.
func structuralReason(c Classification) string {
	if c.Why != "" {
		return "structural change: " + c.Why
	}
	return "structural change"
}
