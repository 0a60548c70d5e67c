package inplace

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// fleetPod is one Pod of a fleet rolling from app:1 to app:2.
type podKind int

const (
	oldReady       podKind = iota // on app:1, ready
	oldDown                       // on app:1, not ready (e.g. stuck on an earlier bad image)
	patchedPending                // patched to app:2 by this rollout, not restarted
	doneReady                     // patched and restarted on app:2, ready
	kinds
)

var fleetTarget = Target{Revision: "r2", Containers: map[string]string{"app": "app:2"}}

func fleetPod(i int, kind podKind, gate bool) *corev1.Pod {
	name := fmt.Sprintf("p%02d", i)
	uid := types.UID("uid-" + name)
	var pod *corev1.Pod
	switch kind {
	case oldReady:
		pod = podWith("app:1", running("app", "app:1", "sha256:one", "c1", 0, true), nil)
	case oldDown:
		pod = podWith("app:1", waiting("app", "app:1", "", "c1", 0, "CrashLoopBackOff"), nil)
	case patchedPending:
		pod = podWith("app:2", running("app", "app:1", "sha256:one", "c1", 0, true),
			stateFor(rolloutID, uid, 0, ContainerBefore{From: "app:1", To: "app:2", ImageID: "sha256:one", ContainerID: "c1"}))
	case doneReady:
		pod = podWith("app:2", running("app", "app:2", "sha256:two", "c2", 1, true),
			stateFor(rolloutID, uid, 0, ContainerBefore{From: "app:1", To: "app:2", ImageID: "sha256:one", ContainerID: "c1"}))
	}
	pod.Name, pod.UID = name, uid
	ready := kind == oldReady || kind == doneReady
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	if gate {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: GateCondition, Status: status})
	}
	return pod
}

// Whatever the mix of Pods — down for other reasons, mid-restart, missing,
// below a partition — the batch Assess picks never takes the workload past
// its bound (or, where it is past it already, takes nothing more down).
func TestAssessNeverExceedsTheBound(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for round := 0; round < 5000; round++ {
		n := 1 + rng.Intn(8)
		var pods []*corev1.Pod
		unavailable := 0
		for i := 0; i < n; i++ {
			kind := podKind(rng.Intn(int(kinds)))
			pods = append(pods, fleetPod(i, kind, false))
			if kind != oldReady && kind != doneReady {
				unavailable++
			}
		}
		missing := rng.Intn(3)
		unavailable += missing
		partition := rng.Intn(n + 1)
		maxUnavailable := 1 + rng.Intn(n)
		in := PassInput{Pods: pods, Target: fleetTarget, Rollout: rolloutID, Now: t0, Deadline: time.Hour,
			MaxUnavailable: maxUnavailable, Expected: n + missing,
			Eligible: func(p *corev1.Pod) bool { var i int; fmt.Sscanf(p.Name, "p%d", &i); return i >= partition }}
		d := Assess(in)
		after := unavailable
		for _, pod := range d.Patch {
			if PodAvailable(pod, 0, t0) {
				after++
			}
			if !in.Eligible(pod) {
				t.Fatalf("round %d: patched %s below the partition %d", round, pod.Name, partition)
			}
		}
		if d.Unavailable != unavailable {
			t.Fatalf("round %d: counted %d unavailable, want %d", round, d.Unavailable, unavailable)
		}
		// What the progress report says is down after the batch is what is.
		if got := d.UnavailableAfter(d.Patch, names(d.Patch)); got != after {
			t.Fatalf("round %d: reported %d unavailable after the batch, want %d", round, got, after)
		}
		if after > maxUnavailable && after > unavailable {
			t.Fatalf("round %d: %d unavailable after the batch (bound %d, before %d)", round, after, maxUnavailable, unavailable)
		}
	}
}

func names(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func TestAssess(t *testing.T) {
	for _, tc := range []struct {
		name      string
		kinds     []podKind
		max       int
		expected  int
		gate      bool
		mutate    func([]*corev1.Pod)
		wantPatch []string
		wantGates []string
		finished  bool
		failed    string
	}{
		{name: "first window", kinds: []podKind{oldReady, oldReady, oldReady}, max: 2, wantPatch: []string{"p00", "p01"}},
		{name: "window full", kinds: []podKind{patchedPending, patchedPending, oldReady}, max: 2},
		// Fix forward: Pods already down on the old images cost no budget.
		{name: "down Pods first and free", kinds: []podKind{oldReady, oldDown, oldDown}, max: 1, wantPatch: []string{"p01", "p02"}},
		{name: "a missing Pod spends the budget", kinds: []podKind{oldReady, oldReady}, max: 1, expected: 3},
		{name: "finished", kinds: []podKind{doneReady, doneReady}, max: 1, finished: true},
		{name: "a Pod being deleted is down and never patched", kinds: []podKind{oldReady, oldReady, oldReady}, max: 2,
			mutate:    func(p []*corev1.Pod) { p[0].DeletionTimestamp = &metav1.Time{Time: t0} },
			wantPatch: []string{"p01"}},
		{name: "done Pod opens its gate", kinds: []podKind{doneReady, oldReady}, max: 2, gate: true,
			mutate:    func(p []*corev1.Pod) { p[0].Status.Conditions[1].Status = corev1.ConditionFalse },
			wantPatch: []string{"p01"}, wantGates: []string{"p00"}},
		// A gate left False by a refit stopped in its grace period: opened
		// again unless the Pod is patched in this very pass.
		{name: "abandoned drain reopened", kinds: []podKind{patchedPending, oldReady}, max: 1, gate: true,
			mutate:    func(p []*corev1.Pod) { p[1].Status.Conditions[1].Status = corev1.ConditionFalse },
			wantGates: []string{"p01"}},
		{name: "new Pod without the gate", kinds: []podKind{doneReady}, max: 1, gate: true,
			mutate:    func(p []*corev1.Pod) { p[0].Status.Conditions = p[0].Status.Conditions[:1] },
			wantGates: []string{"p00"}},
		// Not ready without its gate, so patched for free, and drained
		// rather than opened first.
		{name: "old Pod without the gate", kinds: []podKind{oldReady, oldReady}, max: 1, gate: true,
			mutate:    func(p []*corev1.Pod) { p[0].Status.Conditions = p[0].Status.Conditions[:1] },
			wantPatch: []string{"p00"}},
		{name: "failure stops", kinds: []podKind{patchedPending, oldReady}, max: 2, failed: "p00",
			mutate: func(p []*corev1.Pod) {
				p[0].Status.ContainerStatuses[0] = waiting("app", "app:2", "sha256:one", "c1", 0, "ErrImagePull")
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pods []*corev1.Pod
			for i, k := range tc.kinds {
				pods = append(pods, fleetPod(i, k, tc.gate))
			}
			if tc.mutate != nil {
				tc.mutate(pods)
			}
			expected := tc.expected
			if expected == 0 {
				expected = len(pods)
			}
			d := Assess(PassInput{Pods: pods, Target: fleetTarget, Rollout: rolloutID, Now: t0, Deadline: time.Hour,
				MaxUnavailable: tc.max, Expected: expected, Gate: tc.gate})
			if diff := cmp.Diff(tc.wantPatch, names(d.Patch)); diff != "" {
				t.Errorf("patch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantGates, names(d.OpenGates)); diff != "" {
				t.Errorf("gates (-want +got):\n%s", diff)
			}
			if d.Finished != tc.finished {
				t.Errorf("finished = %v, want %v", d.Finished, tc.finished)
			}
			if got := ""; d.Failed != nil {
				got = d.Failed.Name
				if got != tc.failed {
					t.Errorf("failed %s, want %q", got, tc.failed)
				}
			} else if tc.failed != "" {
				t.Errorf("no failure, want %s", tc.failed)
			}
		})
	}
}

// A Pod this run patched whose patch the cache does not show yet is
// counted down and not patched again.
func TestAssessPendingPatch(t *testing.T) {
	pods := []*corev1.Pod{fleetPod(0, oldReady, false), fleetPod(1, oldReady, false)}
	d := Assess(PassInput{Pods: pods, Target: fleetTarget, Rollout: rolloutID, Now: t0, MaxUnavailable: 1, Expected: 2,
		Pending: map[types.UID]bool{pods[0].UID: true}})
	if len(d.Patch) != 0 || d.Unavailable != 1 || d.Finished {
		t.Errorf("patch %v, unavailable %d, finished %v: want nothing patched while p00's patch is in flight", names(d.Patch), d.Unavailable, d.Finished)
	}
}

// BenchmarkAssess is one pass over 1,000 Pods mid-rollout (a third done, a
// third restarting, a third old): the cost refit pays after every burst of
// Pod events.
func BenchmarkAssess(b *testing.B) {
	var pods []*corev1.Pod
	for i := 0; i < 1000; i++ {
		pods = append(pods, fleetPod(i, []podKind{oldReady, patchedPending, doneReady}[i%3], true))
	}
	for _, cached := range []bool{false, true} {
		b.Run(map[bool]string{false: "parse-every-pass", true: "state-cache"}[cached], func(b *testing.B) {
			in := PassInput{Pods: pods, Target: fleetTarget, Rollout: rolloutID, Now: t0, Deadline: time.Hour,
				MaxUnavailable: 250, Expected: 1000, Gate: true}
			if cached {
				in.States = &StateCache{}
			}
			b.ReportAllocs()
			for b.Loop() {
				Assess(in)
			}
		})
	}
}
