//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/refit-gitops/refit/test/cluster"
)

// The bed's own tests: they prove that the cluster the other e2e tests rely
// on behaves like a real one where refit depends on it.

func TestDeploymentPodsBecomeRunningAndReady(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](6),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx:1.27"}}},
			},
		},
	}
	if _, err := bed.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var last *appsv1.Deployment
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = d
		return d.Status.ReadyReplicas == 6 && d.Status.AvailableReplicas == 6, nil
	})
	if err != nil {
		t.Fatalf("deployment web: want 6 ready replicas within 1m; status %+v", last.Status)
	}
	pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatal(err)
	}
	for _, pod := range pods.Items {
		if pod.Status.Phase != corev1.PodRunning || !podReady(&pod) || pod.Status.PodIP == "" {
			t.Errorf("pod %s: want Running, Ready, with an IP; got %s", pod.Name, describePod(&pod))
		}
		if !strings.HasPrefix(pod.Spec.NodeName, "kwok-node-") {
			t.Errorf("pod %s: scheduled on %q, want a kwok node", pod.Name, pod.Spec.NodeName)
		}
		if cs := containerStatus(&pod, "web"); cs == nil || cs.ImageID == "" || cs.ContainerID == "" {
			t.Errorf("pod %s: want an imageID and a containerID; got %s", pod.Name, describePod(&pod))
		}
	}
}

func TestInPlaceImagePatchRestartsContainer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hollow bool
		// The hollow kubelet's fake runtime kills and starts the container
		// within one pod sync and reports it ready at once (no probes run):
		// no unready status is ever written, so only lastState shows the kill.
		wantUnreadySeen bool
	}{
		{name: "kwok", hollow: false, wantUnreadySeen: true},
		{name: "hollow-kubelet", hollow: true, wantUnreadySeen: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := namespace(t)
			pod := twoContainerPod(ns, "app", tc.hollow)
			createPod(t, pod)
			before := waitPod(t, ns, pod.Name, time.Minute, "Running and Ready", func(p *corev1.Pod) bool {
				return p.Status.Phase == corev1.PodRunning && podReady(p)
			})
			sidecarBefore := *containerStatus(before, "sidecar")
			w := watchPod(t, ns, pod.Name, before.ResourceVersion)

			patchImage(t, ns, pod.Name, 0, "nginx:1.27", "nginx:1.28")

			after := waitPod(t, ns, pod.Name, 2*time.Minute, "the new image running and Ready", func(p *corev1.Pod) bool {
				cs := containerStatus(p, "app")
				return cs != nil && sameImage(cs.Image, "nginx:1.28") && cs.Ready && cs.RestartCount == 1 && podReady(p)
			})
			seen := w.stop()

			if after.UID != before.UID || after.Status.PodIP != before.Status.PodIP || after.Spec.NodeName != before.Spec.NodeName {
				t.Errorf("pod replaced: uid %s→%s ip %s→%s node %s→%s", before.UID, after.UID,
					before.Status.PodIP, after.Status.PodIP, before.Spec.NodeName, after.Spec.NodeName)
			}
			app := containerStatus(after, "app")
			if app.ImageID == containerStatus(before, "app").ImageID || app.ContainerID == containerStatus(before, "app").ContainerID {
				t.Errorf("app container: want a new imageID and containerID; got %s / %s", app.ImageID, app.ContainerID)
			}
			sidecar := containerStatus(after, "sidecar")
			if sidecar.RestartCount != 0 || sidecar.ContainerID != sidecarBefore.ContainerID {
				t.Errorf("sidecar restarted (restarts %d, id %s→%s): only the patched container may restart",
					sidecar.RestartCount, sidecarBefore.ContainerID, sidecar.ContainerID)
			}
			if tc.wantUnreadySeen && !seen.unready {
				t.Errorf("the watch never saw the pod unready during the restart")
			}
			oldID := containerStatus(before, "app").ContainerID
			if term := app.LastTerminationState.Terminated; term == nil || term.ContainerID != oldID {
				t.Errorf("app container: want lastState terminated for the old container %s; got %+v", oldID, app.LastTerminationState)
			}
			if seen.deleted || len(seen.uids) != 1 {
				t.Errorf("the watch saw the pod deleted=%v with UIDs %v; want one UID, never deleted", seen.deleted, seen.uids)
			}
		})
	}
}

func TestBadImageWaitsInErrImagePull(t *testing.T) {
	ns := namespace(t)

	t.Run("new pod", func(t *testing.T) {
		pod := twoContainerPod(ns, "new", false)
		pod.Spec.Containers[0].Image = "registry.example.com/app:does-not-exist"
		createPod(t, pod)
		waitPod(t, ns, pod.Name, time.Minute, "the app container waiting on the image pull", func(p *corev1.Pod) bool {
			cs := containerStatus(p, "app")
			return cs != nil && cs.State.Waiting != nil && isPullError(cs.State.Waiting.Reason) && !podReady(p)
		})
	})

	t.Run("in place", func(t *testing.T) {
		pod := twoContainerPod(ns, "patched", false)
		createPod(t, pod)
		waitPod(t, ns, pod.Name, time.Minute, "Running and Ready", podReady)
		patchImage(t, ns, pod.Name, 0, "nginx:1.27", "nginx:bad")
		waitPod(t, ns, pod.Name, time.Minute, "ImagePullBackOff and unready", func(p *corev1.Pod) bool {
			cs := containerStatus(p, "app")
			return cs != nil && cs.State.Waiting != nil && cs.State.Waiting.Reason == "ImagePullBackOff" && !podReady(p)
		})
		// The container stays down: it never runs the bad image.
		time.Sleep(3 * time.Second)
		p := waitPod(t, ns, pod.Name, time.Second, "still unready", func(p *corev1.Pod) bool { return !podReady(p) })
		if cs := containerStatus(p, "app"); cs.State.Running != nil {
			t.Errorf("app container runs a bad image: %s", describePod(p))
		}
		// A good image again (an in-place rollback) starts it.
		patchImage(t, ns, pod.Name, 0, "nginx:bad", "nginx:1.27")
		waitPod(t, ns, pod.Name, time.Minute, "Ready on the old image", func(p *corev1.Pod) bool {
			cs := containerStatus(p, "app")
			return podReady(p) && cs.Image == "nginx:1.27" && cs.Ready
		})
	})
}

// The bed must leave the InPlaceUpdateReady readiness gate to refit, and
// recompute Ready when only a gate condition changes, as the kubelet does.
func TestReadinessGateIsLeftToRefit(t *testing.T) {
	ns := namespace(t)
	pod := twoContainerPod(ns, "gated", false)
	pod.Spec.ReadinessGates = []corev1.PodReadinessGate{{ConditionType: "InPlaceUpdateReady"}}
	createPod(t, pod)
	waitPod(t, ns, pod.Name, time.Minute, "containers ready", func(p *corev1.Pod) bool {
		cs := containerStatus(p, "app")
		return p.Status.Phase == corev1.PodRunning && cs != nil && cs.Ready
	})
	time.Sleep(2 * time.Second) // give a wrong Stage time to set the gate
	p := waitPod(t, ns, pod.Name, time.Second, "not Ready while the gate is unset", func(p *corev1.Pod) bool { return !podReady(p) })
	for _, c := range p.Status.Conditions {
		if c.Type == "InPlaceUpdateReady" {
			t.Fatalf("the bed set the InPlaceUpdateReady condition (%s): it belongs to refit", c.Status)
		}
	}
	setCondition(t, ns, pod.Name, "InPlaceUpdateReady", corev1.ConditionTrue)
	waitPod(t, ns, pod.Name, 30*time.Second, "Ready once the gate is True", podReady)
	setCondition(t, ns, pod.Name, "InPlaceUpdateReady", corev1.ConditionFalse)
	waitPod(t, ns, pod.Name, 30*time.Second, "unready once the gate is False", func(p *corev1.Pod) bool { return !podReady(p) })
}

func twoContainerPod(ns, name string, hollow bool) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{
				{Name: "app", Image: "nginx:1.27"},
				{Name: "sidecar", Image: "busybox:1.36", Command: []string{"sleep", "infinity"}},
			},
			NodeSelector: map[string]string{cluster.NodeTypeLabel: "kwok"},
		},
	}
	if hollow {
		pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": hollowNode}
		pod.Spec.Tolerations = []corev1.Toleration{{Key: cluster.HollowTaint, Operator: corev1.TolerationOpExists}}
	}
	return pod
}

func createPod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if _, err := bed.Client.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
}

// patchImage changes one container's image with a JSON patch guarded by a
// test of the old image.
func patchImage(t *testing.T, ns, name string, index int, from, to string) {
	t.Helper()
	patch := fmt.Sprintf(`[{"op":"test","path":"/spec/containers/%[1]d/image","value":%[2]q},{"op":"replace","path":"/spec/containers/%[1]d/image","value":%[3]q}]`, index, from, to)
	_, err := bed.Client.CoreV1().Pods(ns).Patch(context.Background(), name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
	if err != nil {
		t.Fatalf("pod %s/%s: patch image %s → %s: %v", ns, name, from, to, err)
	}
}

func setCondition(t *testing.T, ns, name string, condType corev1.PodConditionType, status corev1.ConditionStatus) {
	t.Helper()
	patch := fmt.Sprintf(`{"status":{"conditions":[{"type":%q,"status":%q,"lastTransitionTime":%q}]}}`, condType, status, time.Now().UTC().Format(time.RFC3339))
	_, err := bed.Client.CoreV1().Pods(ns).Patch(context.Background(), name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "status")
	if err != nil {
		t.Fatalf("pod %s/%s: set condition %s=%s: %v", ns, name, condType, status, err)
	}
}

func isPullError(reason string) bool {
	return reason == "ErrImagePull" || reason == "ImagePullBackOff"
}

// sameImage compares image references the way a container runtime reports
// them: "nginx:1.28" and "docker.io/library/nginx:1.28" are one image.
func sameImage(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimPrefix(s, "docker.io/")
		s = strings.TrimPrefix(s, "library/")
		if !strings.Contains(s[strings.LastIndex(s, "/")+1:], ":") && !strings.Contains(s, "@") {
			s += ":latest"
		}
		return s
	}
	return norm(a) == norm(b)
}

// podWatch records what a watch on one Pod saw.
type podWatch struct {
	w    watch.Interface
	done chan struct{}
	mu   sync.Mutex
	seen watchSummary
}

type watchSummary struct {
	unready bool
	deleted bool
	uids    map[types.UID]bool
}

func watchPod(t *testing.T, ns, name, resourceVersion string) *podWatch {
	t.Helper()
	w, err := bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{
		FieldSelector:   "metadata.name=" + name,
		ResourceVersion: resourceVersion,
	})
	if err != nil {
		t.Fatalf("watch pod %s/%s: %v", ns, name, err)
	}
	pw := &podWatch{w: w, done: make(chan struct{}), seen: watchSummary{uids: map[types.UID]bool{}}}
	go func() {
		defer close(pw.done)
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pw.mu.Lock()
			pw.seen.uids[pod.UID] = true
			if ev.Type == watch.Deleted {
				pw.seen.deleted = true
			}
			if !podReady(pod) {
				pw.seen.unready = true
			}
			pw.mu.Unlock()
		}
	}()
	return pw
}

func (pw *podWatch) stop() watchSummary {
	pw.w.Stop()
	<-pw.done
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.seen
}
