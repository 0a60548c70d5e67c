//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/cluster/kubeletsim"
)

// bedNode adds a kwok node of this test's own, with the given annotations
// and allocatable CPU, and removes it afterwards.
func bedNode(t *testing.T, cpu string, annotations map[string]string) string {
	t.Helper()
	node := cluster.KwokNode("bed-"+rand.String(6), 110)
	for k, v := range annotations {
		node.Annotations[k] = v
	}
	node.Status.Capacity[corev1.ResourceCPU] = resource.MustParse(cpu)
	node.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(cpu)
	return addNodes(t, node)[0]
}

// podLog records every state a watch saw of the namespace's Pods.
type podLog struct {
	w    watch.Interface
	done chan struct{}
	mu   sync.Mutex
	seen map[string][]seenPod
}

type seenPod struct {
	at  time.Time
	pod *corev1.Pod
}

func watchPods(t *testing.T, ns string) *podLog {
	t.Helper()
	w, err := bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("watch pods in %s: %v", ns, err)
	}
	l := &podLog{w: w, done: make(chan struct{}), seen: map[string][]seenPod{}}
	go func() {
		defer close(l.done)
		for ev := range w.ResultChan() {
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				l.mu.Lock()
				l.seen[pod.Name] = append(l.seen[pod.Name], seenPod{at: time.Now(), pod: pod})
				l.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { w.Stop(); <-l.done })
	return l
}

// first is when the watch first saw pod name in a state where ok holds,
// after since.
func (l *podLog) first(name string, since time.Time, ok func(*corev1.Pod) bool) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.seen[name] {
		if !s.at.Before(since) && ok(s.pod) {
			return s.at, true
		}
	}
	return time.Time{}, false
}

func (l *podLog) ever(name string, ok func(*corev1.Pod) bool) bool {
	_, seen := l.first(name, time.Time{}, ok)
	return seen
}

func bedPod(ns, name, node string, images ...string) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.PodSpec{NodeName: node}}
	for i, image := range images {
		pod.Spec.Containers = append(pod.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: image})
	}
	return pod
}

func running(pod *corev1.Pod) bool { return pod.Status.Phase == corev1.PodRunning && podReady(pod) }

func waitingReason(pod *corev1.Pod) string {
	if len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].State.Waiting == nil {
		return ""
	}
	return pod.Status.ContainerStatuses[0].State.Waiting.Reason
}

func nodeHasImage(ctx context.Context, node, image string) (bool, string) {
	n, err := bed.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, err.Error()
	}
	var names []string
	for _, img := range n.Status.Images {
		names = append(names, img.Names...)
	}
	return slices.Contains(names, image), strings.Join(names, " ")
}

// An image costs its pull time once per node: the first Pod waits for it
// (and a Pod with an image volume for the volume's image), the next one on
// the node does not; the node lists what it pulled; an image volume that
// cannot be pulled keeps the Pod's containers in ErrImagePull, then
// ImagePullBackOff, naming the image; an in-place image change keeps the
// container down for the pull, then restarts it.
func TestBedImagePulls(t *testing.T) {
	const pull = 2 * time.Second
	ns := namespace(t)
	node := bedNode(t, "1000", map[string]string{kubeletsim.PullDelayAnnotation: pull.String()})
	tag := rand.String(6)
	app, data, next := "bed/app:"+tag, "bed/data:"+tag, "bed/app:next-"+tag
	log := watchPods(t, ns)

	start := time.Now()
	createPod(t, bedPod(ns, "first", node, app))
	withVolume := bedPod(ns, "volume", node, "bed/other:"+tag)
	withVolume.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: data}}}}
	createPod(t, withVolume)
	badVolume := bedPod(ns, "bad-volume", node, app)
	badVolume.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: "bed/data:bad"}}}}
	createPod(t, badVolume)

	waitPod(t, ns, "first", 15*time.Second, "running", running)
	firstUp, _ := log.first("first", start, running)
	if took := firstUp.Sub(start); took < pull {
		t.Errorf("first Pod on a cold node ran after %s, want at least the pull time %s", took, pull)
	}
	if !log.ever("first", func(p *corev1.Pod) bool { return waitingReason(p) == "ContainerCreating" }) {
		t.Error("first Pod never seen waiting ContainerCreating while its image was pulled")
	}
	waitUntil(t, 5*time.Second, "node "+node+" to list "+app, func(ctx context.Context) (bool, string) { return nodeHasImage(ctx, node, app) })

	secondStart := time.Now()
	createPod(t, bedPod(ns, "second", node, app))
	waitPod(t, ns, "second", 15*time.Second, "running", running)
	secondUp, _ := log.first("second", secondStart, running)
	if took := secondUp.Sub(secondStart); took >= pull {
		t.Errorf("second Pod with the same image on the same node ran after %s, want no pull (< %s)", took, pull)
	}

	waitPod(t, ns, "volume", 15*time.Second, "running", running)
	volumeUp, _ := log.first("volume", start, running)
	if took := volumeUp.Sub(start); took < pull {
		t.Errorf("Pod with an image volume ran after %s, want at least the pull time %s", took, pull)
	}
	waitUntil(t, 5*time.Second, "node "+node+" to list the volume image "+data, func(ctx context.Context) (bool, string) { return nodeHasImage(ctx, node, data) })

	bad := waitPod(t, ns, "bad-volume", 15*time.Second, "ImagePullBackOff", func(p *corev1.Pod) bool { return waitingReason(p) == "ImagePullBackOff" })
	if msg := bad.Status.ContainerStatuses[0].State.Waiting.Message; !strings.Contains(msg, "bed/data:bad") {
		t.Errorf("bad image volume: message %q does not name the image", msg)
	}
	if !log.ever("bad-volume", func(p *corev1.Pod) bool { return waitingReason(p) == "ErrImagePull" }) {
		t.Error("bad image volume: never seen ErrImagePull before the back-off")
	}
	if log.ever("bad-volume", running) {
		t.Error("bad image volume: the Pod ran")
	}

	// In place: the container stops at once and stays down while the node
	// pulls the new image.
	patchStart := time.Now()
	patchImage(t, ns, "first", 0, app, next)
	waitPod(t, ns, "first", 20*time.Second, "running "+next, func(p *corev1.Pod) bool {
		s := containerStatus(p, "c0")
		return running(p) && s != nil && s.Image == next
	})
	down, okDown := log.first("first", patchStart, func(p *corev1.Pod) bool { return waitingReason(p) == "ContainerCreating" })
	up, _ := log.first("first", patchStart, func(p *corev1.Pod) bool { return running(p) && p.Status.ContainerStatuses[0].Image == next })
	if !okDown || up.Sub(down) < pull {
		t.Errorf("in-place change: container down from %s to %s (seen down: %t), want down for at least the pull time %s", down.Format(time.StampMilli), up.Format(time.StampMilli), okDown, pull)
	}
	if p, _ := bed.Client.CoreV1().Pods(ns).Get(context.Background(), "first", metav1.GetOptions{}); p.Status.ContainerStatuses[0].RestartCount != 1 {
		t.Errorf("in-place change: restartCount %d, want 1", p.Status.ContainerStatuses[0].RestartCount)
	}
	if slices.ContainsFunc(mustGetPod(t, ns, "first").Status.Conditions, func(c corev1.PodCondition) bool { return c.Type == kubeletsim.PullingCondition }) {
		t.Error("the pulling mark is still on the Pod after it ran")
	}
}

func mustGetPod(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := bed.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get pod %s/%s: %v", ns, name, err)
	}
	return p
}

func resizePod(ns, name, cpuReq, cpuLim, memReq, memLim string) error {
	patch := fmt.Sprintf(`{"spec":{"containers":[{"name":"c0","resources":{"requests":{"cpu":%q,"memory":%q},"limits":{"cpu":%q,"memory":%q}}}]}}`, cpuReq, memReq, cpuLim, memLim)
	_, err := bed.Client.CoreV1().Pods(ns).Patch(context.Background(), name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}, "resize")
	return err
}

func resizablePod(ns, name, node, cpuReq, cpuLim, memReq, memLim string) *corev1.Pod {
	pod := bedPod(ns, name, node, "bed/app:resize")
	pod.Spec.Containers[0].Resources = corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpuReq), corev1.ResourceMemory: resource.MustParse(memReq)},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpuLim), corev1.ResourceMemory: resource.MustParse(memLim)},
	}
	pod.Spec.Containers[0].ResizePolicy = []corev1.ContainerResizePolicy{{ResourceName: corev1.ResourceMemory, RestartPolicy: corev1.RestartContainer}}
	return pod
}

func hasCondition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func statusCPU(p *corev1.Pod) string {
	s := p.Status.ContainerStatuses
	if len(s) == 0 || s[0].Resources == nil {
		return ""
	}
	return s[0].Resources.Requests.Cpu().String()
}

// pods/resize as the kubelet acts on it: a CPU change without a restart,
// a memory change that restarts the container (its resizePolicy says so), a
// change that does not fit beside the node's other Pods (Deferred), one the
// node's static CPU manager cannot do (Infeasible), and one beyond the
// node's allocatable, which the API server refuses.
func TestBedResize(t *testing.T) {
	ns := namespace(t)
	node := bedNode(t, "2", map[string]string{kubeletsim.CPUManagerPolicyAnnotation: "static"})
	log := watchPods(t, ns)
	createPod(t, resizablePod(ns, "burst", node, "500m", "1", "128Mi", "256Mi"))
	createPod(t, resizablePod(ns, "other", node, "1", "1", "64Mi", "64Mi"))
	before := waitPod(t, ns, "burst", 15*time.Second, "running", running)
	waitPod(t, ns, "other", 15*time.Second, "running", running)
	id := before.Status.ContainerStatuses[0].ContainerID

	cpuStart := time.Now()
	if err := resizePod(ns, "burst", "700m", "1", "128Mi", "256Mi"); err != nil {
		t.Fatalf("resize cpu: %v", err)
	}
	p := waitPod(t, ns, "burst", 10*time.Second, "cpu 700m in status, resize done", func(p *corev1.Pod) bool {
		return statusCPU(p) == "700m" && hasCondition(p, corev1.PodResizeInProgress) == nil
	})
	s := p.Status.ContainerStatuses[0]
	if s.RestartCount != 0 || s.ContainerID != id || s.AllocatedResources.Cpu().String() != "700m" || p.Status.ObservedGeneration != p.Generation {
		t.Errorf("cpu resize: restarts %d, containerID %s (was %s), allocated cpu %s, observedGeneration %d of %d; want no restart, 700m allocated, the generation observed",
			s.RestartCount, s.ContainerID, id, s.AllocatedResources.Cpu(), p.Status.ObservedGeneration, p.Generation)
	}
	if !log.ever("burst", func(p *corev1.Pod) bool { return hasCondition(p, corev1.PodResizeInProgress) != nil }) {
		t.Error("cpu resize: PodResizeInProgress never seen")
	}
	if _, down := log.first("burst", cpuStart, func(p *corev1.Pod) bool { return !podReady(p) }); down {
		t.Error("cpu resize: the Pod was seen not ready")
	}

	memStart := time.Now()
	if err := resizePod(ns, "burst", "700m", "1", "192Mi", "384Mi"); err != nil {
		t.Fatalf("resize memory: %v", err)
	}
	p = waitPod(t, ns, "burst", 10*time.Second, "memory 384Mi in status, resize done", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) > 0 && s[0].Resources != nil && s[0].Resources.Limits.Memory().String() == "384Mi" && hasCondition(p, corev1.PodResizeInProgress) == nil && running(p)
	})
	s = p.Status.ContainerStatuses[0]
	if s.RestartCount != 1 || s.ContainerID == id {
		t.Errorf("memory resize with RestartContainer: restarts %d, containerID %s (was %s); want a restart with a new container", s.RestartCount, s.ContainerID, id)
	}
	if _, down := log.first("burst", memStart, func(p *corev1.Pod) bool { return !podReady(p) }); !down {
		t.Error("memory resize with RestartContainer: the Pod was never seen not ready")
	}

	if err := resizePod(ns, "burst", "1500m", "2", "192Mi", "384Mi"); err != nil {
		t.Fatalf("resize beyond what the other Pod leaves: %v", err)
	}
	p = waitPod(t, ns, "burst", 10*time.Second, "PodResizePending Deferred", func(p *corev1.Pod) bool {
		c := hasCondition(p, corev1.PodResizePending)
		return c != nil && c.Reason == corev1.PodReasonDeferred
	})
	if s := p.Status.ContainerStatuses[0]; statusCPU(p) != "700m" || s.AllocatedResources.Cpu().String() != "700m" || s.RestartCount != 1 {
		t.Errorf("deferred resize changed the Pod: %s, allocated %s", describePod(p), s.AllocatedResources.Cpu())
	}

	guaranteed := resizablePod(ns, "guaranteed", node, "100m", "100m", "64Mi", "64Mi")
	createPod(t, guaranteed)
	waitPod(t, ns, "guaranteed", 15*time.Second, "running", running)
	if err := resizePod(ns, "guaranteed", "200m", "200m", "64Mi", "64Mi"); err != nil {
		t.Fatalf("resize guaranteed: %v", err)
	}
	p = waitPod(t, ns, "guaranteed", 10*time.Second, "PodResizePending Infeasible", func(p *corev1.Pod) bool {
		c := hasCondition(p, corev1.PodResizePending)
		return c != nil && c.Reason == corev1.PodReasonInfeasible
	})
	if statusCPU(p) != "100m" {
		t.Errorf("infeasible resize changed the status resources: cpu %s", statusCPU(p))
	}

	err := resizePod(ns, "other", "3", "3", "64Mi", "64Mi")
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "allocatable") {
		t.Errorf("resize beyond the node's allocatable: %v, want the API server's Forbidden", err)
	}
}

// The bed has room for scale tests: Service IPs well beyond the 254 of
// the API server's default range.
func TestBedServiceRange(t *testing.T) {
	ns := namespace(t)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "far", Namespace: ns},
		Spec:       corev1.ServiceSpec{ClusterIP: "10.96.250.17", Ports: []corev1.ServicePort{{Port: 80}}},
	}
	if _, err := bed.Client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create a Service at %s (in %s): %v", svc.Spec.ClusterIP, cluster.ServiceCIDR, err)
	}
}
