//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/test/cluster"
)

// What the real kubelet (the hollow node: kubelet code on kubemark's fake
// runtime) does with pods/resize: it accepts the resize (allocatedResources,
// PodResizeInProgress) but never finishes it, because the fake runtime's
// UpdateContainerResources does nothing and its ContainerStatus keeps
// reporting the resources the container was created with
// (k8s.io/cri-api/pkg/apis/testing, v0.37.2). Resize is therefore tested on
// the kwok nodes (TestBedResize); this test fails, and says so, the day the
// hollow node can finish one.
func TestBedHollowResize(t *testing.T) {
	ns := namespace(t)
	pod := resizablePod(ns, "hollow", "", "100m", "200m", "64Mi", "128Mi")
	pod.Spec.Containers[0].Image = "nginx:1.27"
	pod.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": hollowNode}
	pod.Spec.Tolerations = []corev1.Toleration{{Key: cluster.HollowTaint, Operator: corev1.TolerationOpExists}}
	createPod(t, pod)
	waitPod(t, ns, "hollow", 30*time.Second, "running", running)

	if err := resizePod(ns, "hollow", "150m", "200m", "64Mi", "128Mi"); err != nil {
		t.Fatalf("resize cpu: %v", err)
	}
	waitPod(t, ns, "hollow", 10*time.Second, "the resize accepted (150m allocated, PodResizeInProgress)", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) > 0 && s[0].AllocatedResources.Cpu().String() == "150m" && hasCondition(p, corev1.PodResizeInProgress) != nil
	})
	consistentlyTrue(t, 3*time.Second, "the hollow kubelet's resize to stay in progress with the old status resources", func(ctx context.Context) (bool, string) {
		p, err := bed.Client.CoreV1().Pods(ns).Get(ctx, "hollow", metav1.GetOptions{})
		if err != nil {
			return true, err.Error()
		}
		seen := fmt.Sprintf("status cpu %s, in progress %t", statusCPU(p), hasCondition(p, corev1.PodResizeInProgress) != nil)
		return statusCPU(p) == "100m" && hasCondition(p, corev1.PodResizeInProgress) != nil, seen
	})
}
