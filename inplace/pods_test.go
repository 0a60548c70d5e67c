package inplace

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

const rolloutID = "r-1"

func running(name, image, imageID, id string, restarts int32, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Image: image, ImageID: imageID, ContainerID: id, RestartCount: restarts, Ready: ready,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(t0.Add(time.Second))}}}
}

func waiting(name, image, imageID, id string, restarts int32, reason string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Image: image, ImageID: imageID, ContainerID: id, RestartCount: restarts,
		State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason}}}
}

func startedAt(cs corev1.ContainerStatus, at time.Time) corev1.ContainerStatus {
	cs.State.Running.StartedAt = metav1.NewTime(at)
	return cs
}

func podWith(specImage string, status corev1.ContainerStatus, state *PodState) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "uid-p", Annotations: map[string]string{}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: specImage}}},
		Status:     corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{status}},
	}
	if state != nil {
		raw, _ := json.Marshal(state)
		pod.Annotations[StateAnnotation] = string(raw)
	}
	return pod
}

// withGenerations sets the Pod's generation and the one its status was
// written for, as a kubelet that tracks observedGeneration does.
func withGenerations(pod *corev1.Pod, generation, observed int64) *corev1.Pod {
	pod.Generation, pod.Status.ObservedGeneration = generation, observed
	return pod
}

func stateFor(rollout string, uid types.UID, generation int64, before ContainerBefore) *PodState {
	return &PodState{Rollout: rollout, UID: uid, Revision: "r2", Generation: generation, PatchedAt: t0,
		Containers: map[string]ContainerBefore{"app": before}}
}

func TestPodPhase(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "nginx:1.28"}}
	before := ContainerBefore{From: "nginx:1.27", To: "nginx:1.28", ImageID: "sha256:old", ContainerID: "c1", RestartCount: 0}
	patched := stateFor(rolloutID, "uid-p", 0, before)
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		now  time.Time
		want Phase
	}{
		{"old image", podWith("nginx:1.27", running("app", "nginx:1.27", "sha256:old", "c1", 0, true), nil), t0, PhaseOld},
		{"patched, kubelet not there yet", podWith("nginx:1.28", running("app", "nginx:1.27", "sha256:old", "c1", 0, true), patched), t0, PhaseRestarting},
		{"new container, ready", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c2", 1, true), patched), t0, PhaseDone},
		{"new container, not ready yet", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c2", 1, false), patched), t0, PhaseRestarting},
		// A retag: the digest did not change, so neither does the imageID;
		// the runtime reports the new name.
		{"retag with the same imageID", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:old", "c2", 1, true), patched), t0, PhaseDone},
		// The runtime spells the image its own way.
		{"other spelling", podWith("nginx:1.28", running("app", "docker.io/library/nginx:1.28", "sha256:new", "c2", 1, true), patched), t0, PhaseDone},
		// A crash near the patch: a new container, but on the old image.
		{"crash-restart on the old image", podWith("nginx:1.28", running("app", "nginx:1.27", "sha256:old", "c2", 1, true), patched), t0, PhaseRestarting},
		{"pull error of the patched image", podWith("nginx:1.28", waiting("app", "nginx:1.28", "sha256:old", "c1", 0, "ImagePullBackOff"), patched), t0, PhaseFailed},
		{"deadline passed", podWith("nginx:1.28", running("app", "nginx:1.27", "sha256:old", "c1", 0, true), patched), t0.Add(11 * time.Minute), PhaseFailed},
		{"created from the new template", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c9", 0, true), nil), t0, PhaseDone},
		{"created from the new template, not ready", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c9", 0, false), nil), t0, PhaseRestarting},
		{"created from the new template, bad image", podWith("nginx:1.28", waiting("app", "nginx:1.28", "", "", 0, "ErrImagePull"), nil), t0, PhaseFailed},
		// A state another rollout wrote is no evidence for this one: its
		// patched container has not restarted, so it is still restarting,
		// and its old patch time does not fail the deadline.
		{"state of an earlier rollout, restart pending", podWith("nginx:1.28", running("app", "nginx:1.27", "sha256:old", "c1", 0, true),
			stateFor("r-0", "uid-p", 0, before)), t0.Add(time.Hour), PhaseRestarting},
		{"state of an earlier rollout, restarted", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c2", 1, true),
			stateFor("r-0", "uid-p", 0, before)), t0.Add(time.Hour), PhaseDone},
		// A state copied onto a Pod recreated under the same name.
		{"state of another Pod", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c7", 0, true),
			stateFor(rolloutID, "uid-other", 0, before)), t0, PhaseDone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, reason := PodPhase(tc.pod, target, rolloutID, tc.now, 10*time.Minute); got != tc.want {
				t.Errorf("PodPhase = %s (%s), want %s", got, reason, tc.want)
			}
		})
	}
}

// With a kubelet that reports observedGeneration, the status tells whether
// it was written before or after the kubelet saw the patch.
func TestPodPhaseObservedGeneration(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:2"}}
	// Fix forward: the Pod was stuck on a bad image (app:bad) and is patched
	// to a good one; its status still shows the old pull error.
	fix := stateFor(rolloutID, "uid-p", 4, ContainerBefore{From: "app:bad", To: "app:2", ImageID: "sha256:one", ContainerID: "c1"})
	// A retag: app:1 and app:2 are one digest.
	retag := stateFor(rolloutID, "uid-p", 4, ContainerBefore{From: "app:1", To: "app:2", ImageID: "sha256:one", ContainerID: "c1"})
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want Phase
	}{
		{"old pull error, status before the patch", withGenerations(podWith("app:2", waiting("app", "app:bad", "sha256:one", "c1", 0, "ImagePullBackOff"), fix), 4, 3), PhaseRestarting},
		{"pull error, status after the patch", withGenerations(podWith("app:2", waiting("app", "app:2", "sha256:one", "c1", 0, "ErrImagePull"), fix), 4, 4), PhaseFailed},
		{"fixed forward", withGenerations(podWith("app:2", running("app", "app:2", "sha256:two", "c2", 1, true), fix), 4, 4), PhaseDone},
		// A node that marks the generation seen for another part of the
		// spec (a resize) before it acts on the new image: the pull error
		// names the bad image, not the patched one.
		{"old pull error, generation seen for a resize", withGenerations(podWith("app:2", waiting("app", "app:bad", "sha256:one", "c1", 0, "ErrImagePull"), fix), 4, 4), PhaseRestarting},
		{"retag, status before the patch", withGenerations(podWith("app:2", startedAt(running("app", "app:1", "sha256:one", "c2", 1, true), t0.Add(time.Second)), retag), 4, 3), PhaseRestarting},
		{"retag reported under the old name, after the patch", withGenerations(podWith("app:2", startedAt(running("app", "app:1", "sha256:one", "c2", 1, true), t0.Add(time.Second)), retag), 4, 4), PhaseDone},
		{"retag, container older than the patch", withGenerations(podWith("app:2", startedAt(running("app", "app:1", "sha256:one", "c2", 1, true), t0.Add(-time.Minute)), retag), 4, 4), PhaseRestarting},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, reason := PodPhase(tc.pod, target, rolloutID, t0, 10*time.Minute); got != tc.want {
				t.Errorf("PodPhase = %s (%s), want %s", got, reason, tc.want)
			}
		})
	}
}

// Without observedGeneration, an old failure is recognised by the image the
// status names: fix forward does not fail on the status of the bad image.
func TestPodPhaseFixForwardWithoutObservedGeneration(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:2"}}
	fix := stateFor(rolloutID, "uid-p", 0, ContainerBefore{From: "app:bad", To: "app:2", ImageID: "sha256:one", ContainerID: "c1"})
	pod := podWith("app:2", waiting("app", "app:bad", "sha256:one", "c1", 0, "ImagePullBackOff"), fix)
	if got, reason := PodPhase(pod, target, rolloutID, t0, time.Minute); got != PhaseRestarting {
		t.Errorf("PodPhase = %s (%s), want %s", got, reason, PhaseRestarting)
	}
}

func TestNormalizeImage(t *testing.T) {
	for in, want := range map[string]string{
		"nginx":                                 "docker.io/library/nginx:latest",
		"nginx:1.28":                            "docker.io/library/nginx:1.28",
		"docker.io/library/nginx:1.28":          "docker.io/library/nginx:1.28",
		"ghcr.io/org/app":                       "ghcr.io/org/app:latest",
		"registry.local:5000/app:2":             "registry.local:5000/app:2",
		"app@sha256:" + strings.Repeat("a", 64): "docker.io/library/app@sha256:" + strings.Repeat("a", 64),
		"Not A Reference":                       "Not A Reference",
	} {
		if got := NormalizeImage(in); got != want {
			t.Errorf("NormalizeImage(%q) = %q, want %q", in, got, want)
		}
	}
}

func patchOps(t *testing.T, raw []byte) []jsonPatchOp {
	t.Helper()
	var ops []jsonPatchOp
	if err := json.Unmarshal(raw, &ops); err != nil {
		t.Fatal(err)
	}
	return ops
}

func TestPodPatchIsGuardedAndRecordsTheBefore(t *testing.T) {
	pod := podWith("nginx:1.27", running("app", "nginx:1.27", "sha256:old", "c1", 3, true), nil)
	pod.Labels = map[string]string{"app": "x"}
	pod.Annotations = map[string]string{"other": "kept"}
	pod.Generation = 7
	target := Target{Revision: "r2", Containers: map[string]string{"app": "nginx:1.28"}}
	raw, err := PodPatch(pod, PatchInput{Target: target, Rollout: rolloutID, Labels: map[string]string{"controller-revision-hash": "web-abc"}, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	ops := patchOps(t, raw)
	want := []string{
		`test /metadata/uid "uid-p"`, // first: a Pod recreated under the name refuses it
		`test /spec/containers/0/image "nginx:1.27"`,
		`replace /spec/containers/0/image "nginx:1.28"`,
		`test /metadata/generation 7`,
		`add /metadata/labels/controller-revision-hash "web-abc"`,
	}
	for i, w := range want {
		v, _ := json.Marshal(ops[i].Value)
		if got := ops[i].Op + " " + ops[i].Path + " " + string(v); got != w {
			t.Errorf("op %d = %q, want %q", i, got, w)
		}
	}
	last := ops[len(ops)-1]
	if last.Op != "add" || last.Path != "/metadata/annotations/refit.dev~1inplace-state" {
		t.Fatalf("last op %s %s: the state must be added beside the annotations others wrote", last.Op, last.Path)
	}
	var state PodState
	if err := json.Unmarshal([]byte(last.Value.(string)), &state); err != nil {
		t.Fatal(err)
	}
	c := state.Containers["app"]
	if state.Rollout != rolloutID || state.UID != pod.UID || state.Generation != 8 || c.ContainerID != "c1" || c.RestartCount != 3 || c.Origin != "nginx:1.27" {
		t.Errorf("state %+v: want the rollout, the Pod's UID, generation 8 and what the container was before", state)
	}
}

// A Pod without annotations gets the whole map, guarded by a test that it
// is still absent, so an annotation another writer adds meanwhile is never
// replaced (the patch fails and the next pass sees the Pod as it is).
func TestPodPatchGuardsAFirstAnnotation(t *testing.T) {
	pod := podWith("nginx:1.27", running("app", "nginx:1.27", "sha256:old", "c1", 0, true), nil)
	pod.Annotations = nil
	raw, err := PodPatch(pod, PatchInput{Target: Target{Revision: "r2", Containers: map[string]string{"app": "nginx:1.28"}}, Rollout: rolloutID, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `{"op":"test","path":"/metadata/annotations","value":null},{"op":"add","path":"/metadata/annotations"`) {
		t.Errorf("patch %s: want a test that annotations are absent before they are added", raw)
	}
}

// A re-targeted rollout patches a Pod a second time: what it ran before the
// rollout (the origin a rollback returns to) is carried over.
func TestPodPatchKeepsTheOriginAcrossRetargets(t *testing.T) {
	first := stateFor(rolloutID, "uid-p", 0, ContainerBefore{From: "app:1", To: "app:2", Origin: "app:1"})
	pod := podWith("app:2", running("app", "app:2", "sha256:two", "c2", 1, true), first)
	raw, err := PodPatch(pod, PatchInput{Target: Target{Revision: "r3", Containers: map[string]string{"app": "app:3"}}, Rollout: rolloutID, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	ops := patchOps(t, raw)
	var state PodState
	if err := json.Unmarshal([]byte(ops[len(ops)-1].Value.(string)), &state); err != nil {
		t.Fatal(err)
	}
	if c := state.Containers["app"]; c.From != "app:2" || c.Origin != "app:1" {
		t.Errorf("container %+v: want from app:2, origin app:1", c)
	}
}

func TestRestartPending(t *testing.T) {
	// Patched to 1.28, then the rollout was re-targeted to 1.29: not yet
	// restarted, the Pod is about to go down whatever the new target.
	patched := stateFor("r-0", "uid-p", 0, ContainerBefore{From: "nginx:1.27", To: "nginx:1.28", ImageID: "i", ContainerID: "c1"})
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want bool
	}{
		{"never patched", podWith("nginx:1.27", running("app", "nginx:1.27", "i", "c1", 0, true), nil), false},
		{"patched, not restarted", podWith("nginx:1.28", running("app", "nginx:1.27", "i", "c1", 0, true), patched), true},
		{"patched and restarted", podWith("nginx:1.28", running("app", "nginx:1.28", "j", "c2", 1, true), patched), false},
		{"spec moved on since", podWith("nginx:1.27", running("app", "nginx:1.27", "i", "c1", 0, true), patched), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RestartPending(tc.pod); got != tc.want {
				t.Errorf("RestartPending = %v, want %v", got, tc.want)
			}
		})
	}
}
