package inplace

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func running(name, image, imageID, id string, restarts int32, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, Image: image, ImageID: imageID, ContainerID: id, RestartCount: restarts, Ready: ready,
		State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

func podWith(specImage string, status corev1.ContainerStatus, state *PodState) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Annotations: map[string]string{}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: specImage}}},
		Status:     corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{status}},
	}
	if state != nil {
		raw, _ := json.Marshal(state)
		pod.Annotations[StateAnnotation] = string(raw)
	}
	return pod
}

func TestPodPhase(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "nginx:1.28"}}
	patched := &PodState{Revision: "r2", PatchedAt: t0, Containers: map[string]ContainerBefore{
		"app": {From: "nginx:1.27", To: "nginx:1.28", ImageID: "sha256:old", ContainerID: "c1", RestartCount: 0}}}
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
		// A retag: the digest did not change, so neither does the imageID.
		{"retag with the same imageID", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:old", "c2", 1, true), patched), t0, PhaseDone},
		// The runtime spells the image its own way.
		{"other spelling", podWith("nginx:1.28", running("app", "docker.io/library/nginx:1.28", "sha256:new", "c2", 1, true), patched), t0, PhaseDone},
		{"pull error", podWith("nginx:1.28", corev1.ContainerStatus{Name: "app", ContainerID: "c1",
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}}}, patched), t0, PhaseFailed},
		{"deadline passed", podWith("nginx:1.28", running("app", "nginx:1.27", "sha256:old", "c1", 0, true), patched), t0.Add(11 * time.Minute), PhaseFailed},
		{"created from the new template", podWith("nginx:1.28", running("app", "nginx:1.28", "sha256:new", "c9", 0, true), nil), t0, PhaseDone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, reason := PodPhase(tc.pod, target, tc.now, 10*time.Minute); got != tc.want {
				t.Errorf("PodPhase = %s (%s), want %s", got, reason, tc.want)
			}
		})
	}
}

func TestPodPatchIsGuardedAndRecordsTheBefore(t *testing.T) {
	pod := podWith("nginx:1.27", running("app", "nginx:1.27", "sha256:old", "c1", 3, true), nil)
	pod.Labels = map[string]string{"app": "x"}
	target := Target{Revision: "r2", Containers: map[string]string{"app": "nginx:1.28"}}
	raw, err := PodPatch(pod, target, map[string]string{"controller-revision-hash": "web-abc"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	var ops []jsonPatchOp
	if err := json.Unmarshal(raw, &ops); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`test /spec/containers/0/image nginx:1.27`,
		`replace /spec/containers/0/image nginx:1.28`,
		`add /metadata/labels/controller-revision-hash web-abc`,
	}
	for i, w := range want {
		if got := ops[i].Op + " " + ops[i].Path + " " + ops[i].Value.(string); got != w {
			t.Errorf("op %d = %q, want %q", i, got, w)
		}
	}
	last := ops[len(ops)-1]
	if last.Path != "/metadata/annotations" || !strings.Contains(string(raw), `\"containerID\":\"c1\"`) || !strings.Contains(string(raw), `\"restartCount\":3`) {
		t.Errorf("state annotation missing what the container was before: %s", raw)
	}
}

func TestRestartPending(t *testing.T) {
	// Patched to 1.28, then the rollout was re-targeted to 1.29: not yet
	// restarted, the Pod is about to go down whatever the new target.
	patched := &PodState{Revision: "r2", PatchedAt: t0, Containers: map[string]ContainerBefore{
		"app": {From: "nginx:1.27", To: "nginx:1.28", ContainerID: "c1"}}}
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
