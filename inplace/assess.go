package inplace

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// PassInput is everything one look at a workload's Pods depends on.
type PassInput struct {
	// Pods are the workload's current Pods (owned by it), as last seen.
	Pods   []*corev1.Pod
	Target Target
	// Rollout is the rollout's ID: only Pod states it wrote are evidence.
	Rollout  string
	Now      time.Time
	Deadline time.Duration
	// MinReadySeconds of the workload: a Pod is available once ready that long.
	MinReadySeconds int32
	// MaxUnavailable is the workload's bound, resolved against live replicas.
	MaxUnavailable int
	// Expected is how many Pods the workload should have; Pods it lacks
	// count as unavailable, as the workload controllers count them.
	Expected int
	// Eligible says which Pods this rollout may update (a StatefulSet's
	// ordinals at or above the partition); nil means all.
	Eligible func(*corev1.Pod) bool
	// Ordinal is a StatefulSet Pod's ordinal (patched highest first), or -1.
	Ordinal func(*corev1.Pod) int
	// Pending are Pods this run patched whose patch the cache may not show yet.
	Pending map[types.UID]bool
	// Gate: the template lists the InPlaceUpdateReady readiness gate.
	Gate bool
	// States, if set, remembers parsed Pod states between passes.
	States *StateCache
	// Window, if set, says which available Pods may be patched now (a
	// DaemonSet's surge: those on a node with an available extra Pod).
	Window func(*corev1.Pod) bool
	// Hold, if set, says which old Pods must wait (their node is pulling
	// the new images): they are not patched in this pass.
	Hold func(*corev1.Pod) bool
}

// StateCache keeps each Pod's parsed state for as long as its annotation
// does not change: a pass over many Pods then parses only what moved.
// It is not safe for concurrent use; one rollout owns one.
type StateCache struct {
	entries map[types.UID]cachedState
}

type cachedState struct {
	raw   string
	state *PodState
}

// get returns the Pod's state (any rollout's), or nil.
func (c *StateCache) get(pod *corev1.Pod) *PodState {
	if c == nil {
		state, _ := ReadState(pod)
		return state
	}
	raw := pod.Annotations[StateAnnotation]
	if e, ok := c.entries[pod.UID]; ok && e.raw == raw {
		return e.state
	}
	if c.entries == nil {
		c.entries = map[types.UID]cachedState{}
	}
	state, _ := ReadState(pod)
	c.entries[pod.UID] = cachedState{raw: raw, state: state}
	return state
}

// PassDecision is what to do next, decided from a PassInput alone.
type PassDecision struct {
	// Patch are the Pods to update now, in order, within the bound (PDBs
	// are applied afterwards, against fresher data).
	Patch []*corev1.Pod
	// OpenGates are Pods whose InPlaceUpdateReady condition must be set
	// True: they run the target images and are ready, or they are new, or
	// an update of theirs was abandoned.
	OpenGates []*corev1.Pod
	// Quiet are Pods to update now whose update takes no container down
	// (metadata, a resize without restart): outside the bound, the PDBs
	// and the drain, at most MaxUnavailable of them in flight.
	Quiet []*corev1.Pod
	// Failed is a Pod that cannot take the target images, with Reason.
	Failed *corev1.Pod
	Reason string
	// Settled are pending Pods whose patch the cache shows now.
	Settled []types.UID
	// Finished: every eligible Pod runs the target images and is available.
	Finished                 bool
	Done, Total, Unavailable int
	// Phases of the eligible Pods, by UID.
	Phases map[types.UID]Phase
	// Down are the Pods counted in Unavailable (missing ones have no UID).
	Down map[types.UID]bool
}

// Assess looks at every Pod once and decides the next step of a rollout:
// finish, stop on a failure, open gates, or patch the next batch under the
// workload's bound. It is a pure function; the caller writes.
func Assess(in PassInput) PassDecision {
	out := PassDecision{Phases: map[types.UID]Phase{}, Down: map[types.UID]bool{}}
	var (
		candidates []Candidate
		byName     = map[string]*corev1.Pod{}
		pendingNow = 0
		counted    = 0
		gateClosed []*corev1.Pod
		held       = map[string]bool{}
		quiet      = map[string]bool{}
	)
	for _, pod := range in.Pods {
		state := in.States.get(pod)
		phase, reason := podPhase(pod, state, in.Target, in.Rollout, in.Now, in.Deadline)
		pending := restartPending(pod, state)
		if in.Pending[pod.UID] {
			if phase == PhaseOld {
				phase = PhaseRestarting // our patch is not in the cache yet
				pendingNow++
			} else {
				out.Settled = append(out.Settled, pod.UID)
			}
		}
		// A patched Pod is counted down from the patch on, before the kubelet
		// has even killed its container: it is about to go down. So is one
		// patched by an earlier rollout or for an earlier target whose restart
		// has not happened yet.
		q := quietUpdate(pod, state, in.Target, in.Rollout)
		available := PodAvailable(pod, in.MinReadySeconds, in.Now) && (phase != PhaseRestarting || q) &&
			!(phase == PhaseOld && pending)
		if in.Gate && pod.DeletionTimestamp == nil {
			switch {
			case gateMissing(pod):
				// A new Pod: not ready until the gate is set.
				gateClosed = append(gateClosed, pod)
				available = false
			case phase == PhaseDone && !gateTrue(pod) && podContainersReady(pod):
				out.OpenGates = append(out.OpenGates, pod)
				available = false // Ready follows once the node sees the gate
			case phase == PhaseOld && !gateTrue(pod) && !pending && podContainersReady(pod):
				// Drained for a patch that never came (a refit killed in the
				// grace period, a refused patch): open it unless it is patched
				// in this very pass.
				gateClosed = append(gateClosed, pod)
			}
		}
		counted++
		if !available {
			out.Unavailable++
			out.Down[pod.UID] = true
		}
		if in.Eligible != nil && !in.Eligible(pod) || pod.DeletionTimestamp != nil {
			// A Pod being deleted counts as unavailable; it is never patched.
			continue
		}
		out.Phases[pod.UID] = phase
		if phase == PhaseFailed && out.Failed == nil {
			out.Failed, out.Reason = pod, reason
		}
		if phase == PhaseDone && available {
			out.Done++
		}
		ordinal := -1
		if in.Ordinal != nil {
			ordinal = in.Ordinal(pod)
		}
		byName[pod.Name] = pod
		if in.Window != nil && available && !in.Window(pod) {
			held[pod.Name] = true
		}
		quiet[pod.Name] = q
		candidates = append(candidates, Candidate{Name: pod.Name, Ordinal: ordinal, Available: available,
			Done: phase == PhaseDone, InProgress: phase == PhaseRestarting || phase == PhaseFailed})
	}
	if missing := in.Expected - counted; missing > 0 {
		out.Unavailable += missing
	}
	out.Total = len(candidates)
	out.Finished = out.Done == out.Total && pendingNow == 0 && out.Failed == nil
	if out.Failed != nil || out.Finished {
		out.OpenGates = append(out.OpenGates, gateClosed...)
		return out
	}
	candidates, quietOnes := splitQuiet(candidates, quiet)
	for _, name := range selectQuiet(quietOnes, in.MaxUnavailable) {
		out.Quiet = append(out.Quiet, byName[name])
	}
	selected := map[string]bool{}
	for _, name := range SelectBatch(unheld(outside(candidates, held), byName, in.Hold), in.MaxUnavailable-out.Unavailable) {
		selected[name] = true
		out.Patch = append(out.Patch, byName[name])
	}
	for _, pod := range gateClosed {
		if !selected[pod.Name] {
			out.OpenGates = append(out.OpenGates, pod)
		}
	}
	return out
}

// UnavailableAfter is how many Pods are down once the batch's patched Pods
// (by name) go down too: a patched Pod that was down already (crashing, not
// ready yet) is counted once.
func (d PassDecision) UnavailableAfter(batch []*corev1.Pod, patched []string) int {
	n := d.Unavailable
	for _, pod := range batch {
		if slices.Contains(patched, pod.Name) && !d.Down[pod.UID] {
			n++
		}
	}
	return n
}
