package inplace

import (
	"encoding/json"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"
)

func workloadYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		t.Fatal(err)
	}
	return obj
}

const (
	gatedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers: [{name: web, image: "web:2"}]
`
	ungatedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "api:2"}]
`
	gatedBarePod = `apiVersion: v1
kind: Pod
metadata: {name: solo, namespace: shop}
spec:
  readinessGates: [{conditionType: InPlaceUpdateReady}]
  containers: [{name: solo, image: "solo:2"}]
`
)

// podIn builds a running Pod of namespace shop with one container "web"
// on image web:2, ready or not, with the gate in the given state ("" for
// no condition).
func podIn(name string, labels map[string]string, ready bool, gate corev1.ConditionStatus) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:2"}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "web", Image: "web:2", ImageID: "id-2", ContainerID: "c-2", Ready: ready,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}}},
	}
	if gate != "" {
		pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: GateCondition, Status: gate})
	}
	return pod
}

func TestGateToOpen(t *testing.T) {
	web := map[string]string{"app": "web"}
	workloads := []gatedWorkload{}
	for _, doc := range []string{gatedDeployment, ungatedDeployment, gatedBarePod} {
		obj := workloadYAML(t, doc)
		if g, ok := gatedOf(obj); ok {
			workloads = append(workloads, g)
		}
	}
	if len(workloads) != 2 {
		t.Fatalf("gated workloads: %d, want 2 (the ungated Deployment left out)", len(workloads))
	}
	deleting := podIn("web-d", web, true, "")
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	otherNS := podIn("web-x", web, true, "")
	otherNS.Namespace = "elsewhere"
	finished := podIn("web-f", web, false, "")
	finished.Status.Phase = corev1.PodSucceeded

	// Patched to web:2 by a rollout, the kubelet has not restarted the
	// container yet: still on web:1.
	pending := podIn("web-p", web, true, corev1.ConditionFalse)
	pending.Status.ContainerStatuses[0].Image, pending.Status.ContainerStatuses[0].ImageID, pending.Status.ContainerStatuses[0].ContainerID = "web:1", "id-1", "c-1"
	state, err := json.Marshal(PodState{UID: pending.UID, Revision: "r", PatchedAt: time.Now(),
		Containers: map[string]ContainerBefore{"web": {From: "web:1", To: "web:2", ImageID: "id-1", ContainerID: "c-1"}}})
	if err != nil {
		t.Fatal(err)
	}
	pending.Annotations = map[string]string{StateAnnotation: string(state)}

	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		busy bool
		want bool
	}{
		{"a new Pod without the condition", podIn("web-1", web, false, ""), false, true},
		{"a new ready Pod without the condition", podIn("web-2", web, true, ""), false, true},
		{"gate True", podIn("web-3", web, true, corev1.ConditionTrue), false, false},
		{"gate False, ready, no rollout on it (left by a killed refit)", podIn("web-4", web, true, corev1.ConditionFalse), false, true},
		{"gate False, not ready", podIn("web-5", web, false, corev1.ConditionFalse), false, false},
		{"gate False, a rollout of this process is updating it", podIn("web-6", web, true, corev1.ConditionFalse), true, false},
		{"no condition, a rollout of this process is updating it", podIn("web-7", web, false, ""), true, false},
		{"gate False, a restart refit patched is pending", pending, false, false},
		{"being deleted", deleting, false, false},
		{"finished", finished, false, false},
		{"not a Pod of a gated workload", podIn("api-1", map[string]string{"app": "api"}, true, ""), false, false},
		{"matching labels in another namespace", otherNS, false, false},
		{"the gated bare Pod", podIn("solo", nil, true, corev1.ConditionFalse), false, true},
		{"another bare Pod", podIn("duo", nil, true, ""), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := gateToOpen(tc.pod, workloads, tc.busy); got != tc.want {
				t.Errorf("gateToOpen(%s, busy %v) = %v, want %v", tc.pod.Name, tc.busy, got, tc.want)
			}
		})
	}
}

func TestGateKeeperSetReplacesAnAppsWorkloads(t *testing.T) {
	k := NewGateKeeper(&Engine{busy: newBusyPods()})
	k.Set("shop", []*unstructured.Unstructured{workloadYAML(t, gatedDeployment), workloadYAML(t, gatedBarePod)})
	k.Set("other", []*unstructured.Unstructured{workloadYAML(t, gatedDeployment)})
	if n := len(k.apps["shop"]); n != 2 {
		t.Fatalf("shop: %d gated workloads, want 2", n)
	}
	k.Set("shop", []*unstructured.Unstructured{workloadYAML(t, ungatedDeployment)})
	if _, ok := k.apps["shop"]; ok {
		t.Errorf("shop still has gated workloads after a set without any: %v", k.apps["shop"])
	}
	if n := len(k.apps["other"]); n != 1 {
		t.Errorf("other: %d gated workloads, want 1 (another app's set leaves it alone)", n)
	}
	select {
	case <-k.changed:
	default:
		t.Error("Set did not wake the keeper")
	}
}
