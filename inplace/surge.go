package inplace

import (
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A workload whose bound is 0 (maxUnavailable 0, or 25% of fewer than 4
// replicas) lets no Pod go down, but allows maxSurge extra Pods: refit
// brings up extra Pods on the new template, patches the original Pods in
// place one window at a time (a window is as many Pods as there are
// available extra Pods, for a DaemonSet the Pod of a node with an available
// extra Pod), then deletes the extra Pods. This file holds the decisions;
// surge_run.go writes them.
//
// Extra Pods are controlled by something other than the workload's Pod
// controller, so that it neither adopts, counts nor scales against them
// (ClaimObject in pkg/controller/controller_ref_manager.go ignores a Pod
// whose controller reference names another owner, and adopts one with
// none): a Deployment's by the Deployment itself (the ReplicaSet controller
// ignores them, the Deployment controller groups Pods by ReplicaSet only,
// and the disruption controller finds the Deployment's scale, the same UID
// as for the original Pods, so a PDB's expected count stays replicas); a
// DaemonSet's by the original Pod they stand in for (a DaemonSet controller
// that saw two of its Pods on a node without its own surge would delete the
// newer one). Garbage collection removes them with their owner.

// SurgeLabel marks refit's extra Pods; its value is the workload's UID, so
// a restarted refit finds them from the objects alone.
const SurgeLabel = "refit.dev/surge-of"

// SurgeDeadlineAnnotation on a workload bounds how long an extra Pod may
// stay unscheduled (no room) before refit gives up on the surge.
const SurgeDeadlineAnnotation = "refit.dev/surge-deadline"

// SurgeRefusedAnnotation on a live workload says that the surge of a
// target (its images) found no room: the plan then sends that target the
// ordinary way.
const SurgeRefusedAnnotation = "refit.dev/surge-refused"

// DefaultSurgeDeadline: a scheduler that finds room does so in moments.
const DefaultSurgeDeadline = 30 * time.Second

// SurgeCount is how many extra Pods a workload whose bound is maxUnavailable
// may have during a rollout: 0 when Pods may go down anyway, else maxSurge
// (nil means def) of replicas rounded up, as the Deployment and DaemonSet
// controllers round it. fallback says why in place is impossible (no Pod
// may go down and none may be added), or "".
func SurgeCount(maxUnavailable int, maxSurge *intstr.IntOrString, def intstr.IntOrString, replicas int) (n int, fallback string, err error) {
	if maxUnavailable > 0 {
		return 0, "", nil
	}
	n, err = ResolveMaxUnavailable(maxSurge, def, replicas, RoundUp)
	if err != nil {
		return 0, "", fmt.Errorf("maxSurge: %w", err)
	}
	if n == 0 {
		return 0, "maxUnavailable is 0 and maxSurge is 0: no Pod may go down while it restarts and no extra Pod may stand in for it", nil
	}
	return n, "", nil
}

// SurgeOriginal is what the surge decision needs of one of the workload's
// own Pods.
type SurgeOriginal struct {
	Name, Node string
	// Finished: runs the target images and is available.
	Finished bool
	// Available counts now: ready, and neither patched nor restarting.
	Available bool
}

// SurgeExtra is one of refit's extra Pods.
type SurgeExtra struct {
	Name, Node string
	Created    time.Time
	Scheduled  bool
	Available  bool
	Deleting   bool
	// Failure is why it cannot start (a bad image), or "".
	Failure string
	// Unschedulable is the scheduler's message while it is not scheduled.
	Unschedulable string
}

// SurgeInput is everything one surge decision depends on.
type SurgeInput struct {
	Originals []SurgeOriginal
	Extras    []SurgeExtra
	// MaxSurge is how many extra Pods may exist at once.
	MaxSurge int
	// Replicas is how many available Pods there must always be.
	Replicas int
	// PerNode: a DaemonSet, whose extra Pod must run on the node of the Pod
	// it stands in for.
	PerNode  bool
	Now      time.Time
	Deadline time.Duration
}

// SurgeDecision is what to do with the extra Pods now.
type SurgeDecision struct {
	// Create is how many extra Pods to create (not PerNode).
	Create int
	// CreateFor are the originals to create an extra Pod for, on their
	// nodes (PerNode).
	CreateFor []string
	// Delete are extra Pods to delete now.
	Delete []string
	// Window is how many original Pods may be down at once on account of
	// the extra Pods; PerNode, only those on WindowNodes.
	Window      int
	WindowNodes map[string]bool
	// Stuck names an extra Pod that cannot come up, and Reason why.
	Stuck, Reason string
	// Gone: every original is finished and no extra Pod is left.
	Gone bool
}

// PlanSurge decides which extra Pods to create and delete, and the window
// of original Pods they cover. An available extra Pod is deleted only while
// the available Pods without it still number Replicas (PerNode: only once
// the Pod of its node is finished). It is a pure function.
func PlanSurge(in SurgeInput) SurgeDecision {
	out := SurgeDecision{WindowNodes: map[string]bool{}}
	remaining, available := 0, 0
	for _, o := range in.Originals {
		if !o.Finished {
			remaining++
		}
		if o.Available {
			available++
		}
	}
	var live []SurgeExtra
	for _, x := range in.Extras {
		if !x.Deleting {
			live = append(live, x)
		}
	}
	sort.SliceStable(live, func(i, j int) bool {
		if live[i].Available != live[j].Available {
			return !live[i].Available // the ones serving nothing go first
		}
		return live[i].Name < live[j].Name
	})
	if remaining == 0 {
		for _, x := range live {
			out.Delete = append(out.Delete, x.Name)
		}
		out.Gone = len(in.Extras) == 0
		return out
	}
	for _, x := range live {
		switch {
		case x.Failure != "":
			out.Stuck, out.Reason = x.Name, fmt.Sprintf("the extra Pod %s cannot start: %s", x.Name, x.Failure)
		case !x.Scheduled && in.Deadline > 0 && in.Now.Sub(x.Created) > in.Deadline:
			out.Stuck, out.Reason = x.Name, fmt.Sprintf("no room for an extra Pod: %s stayed unscheduled for %s (%s)", x.Name, in.Deadline, x.Unschedulable)
		}
		if out.Stuck != "" {
			return out
		}
	}
	if in.PerNode {
		planPerNode(in, live, &out)
		return out
	}
	want := min(in.MaxSurge, remaining)
	kept, availableExtras := len(live), 0
	for _, x := range live {
		if x.Available {
			availableExtras++
		}
	}
	for _, x := range live {
		if kept <= want {
			break
		}
		if x.Available {
			if available+availableExtras-1 < in.Replicas {
				continue
			}
			availableExtras--
		}
		out.Delete = append(out.Delete, x.Name)
		kept--
	}
	out.Create = max(want-kept, 0)
	out.Window = availableExtras
	return out
}

// planPerNode: one extra Pod on the node of each of the first MaxSurge
// unfinished originals (by name), kept until that original is finished.
func planPerNode(in SurgeInput, live []SurgeExtra, out *SurgeDecision) {
	originals := append([]SurgeOriginal(nil), in.Originals...)
	sort.Slice(originals, func(i, j int) bool { return originals[i].Name < originals[j].Name })
	needed := map[string]bool{}
	for _, o := range originals {
		if !o.Finished {
			needed[o.Node] = true
		}
	}
	covered := map[string]bool{}
	// Available ones sort last: on a node with two, the available one stays.
	for i := len(live) - 1; i >= 0; i-- {
		x := live[i]
		if !needed[x.Node] || covered[x.Node] {
			out.Delete = append(out.Delete, x.Name)
			continue
		}
		covered[x.Node] = true
		if x.Available {
			out.WindowNodes[x.Node] = true
		}
	}
	slots := in.MaxSurge - len(covered)
	for _, o := range originals {
		if slots <= 0 {
			break
		}
		if o.Finished || covered[o.Node] {
			continue
		}
		covered[o.Node] = true
		out.CreateFor = append(out.CreateFor, o.Name)
		slots--
	}
	out.Window = len(out.WindowNodes)
}

// surgeLabelsDropped are labels a workload controller puts on its own Pods:
// an extra Pod carrying them would look like one of the controller's.
var surgeLabelsDropped = []string{appsv1.DefaultDeploymentUniqueLabelKey, appsv1.ControllerRevisionHashLabelKey, podTemplateGenerationLabel}

// ExtraPod builds an extra Pod from the workload's new template: the
// template's labels (so Services send it traffic) without the controllers'
// revision labels, SurgeLabel, owner as its controller, and, when node is
// set, required to run on that node. refit's readiness gate is dropped: the
// extra Pod is born on the new images.
func ExtraPod(tmpl *corev1.PodTemplateSpec, namespace, prefix string, key string, owner metav1.OwnerReference, node string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: *tmpl.ObjectMeta.DeepCopy(), Spec: *tmpl.Spec.DeepCopy()}
	pod.Name, pod.Namespace = "", namespace
	pod.GenerateName = prefix + "-surge-"
	if pod.Labels == nil {
		pod.Labels = map[string]string{}
	}
	for _, k := range surgeLabelsDropped {
		delete(pod.Labels, k)
	}
	pod.Labels[SurgeLabel] = key
	delete(pod.Annotations, StateAnnotation)
	t, f := true, false
	owner.Controller, owner.BlockOwnerDeletion = &t, &f
	pod.OwnerReferences = []metav1.OwnerReference{owner}
	var gates []corev1.PodReadinessGate
	for _, g := range pod.Spec.ReadinessGates {
		if g.ConditionType != GateCondition {
			gates = append(gates, g)
		}
	}
	pod.Spec.ReadinessGates = gates
	if node != "" {
		// As the DaemonSet controller places its Pods: the node by name,
		// through the scheduler, so that a node without room leaves the
		// Pod Pending rather than failed.
		if pod.Spec.Affinity == nil {
			pod.Spec.Affinity = &corev1.Affinity{}
		}
		if pod.Spec.Affinity.NodeAffinity == nil {
			pod.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
		}
		pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{
				{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{node}},
			}}},
		}
		pod.Spec.Tolerations = append(pod.Spec.Tolerations, daemonTolerations...)
	}
	return pod
}

// daemonTolerations are those the DaemonSet controller adds to its Pods
// (AddOrUpdateDaemonPodTolerations): an extra Pod must fit where they do.
var daemonTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// outside are the candidates not held back by a window.
func outside(candidates []Candidate, held map[string]bool) []Candidate {
	if len(held) == 0 {
		return candidates
	}
	var out []Candidate
	for _, c := range candidates {
		if !held[c.Name] {
			out = append(out, c)
		}
	}
	return out
}
