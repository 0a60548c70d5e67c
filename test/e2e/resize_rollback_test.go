//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/test/cluster/kubeletsim"
)

// rollbackApp is a Deployment of 4 with refit.dev/rollback: auto whose
// container restarts for a CPU resize. %[1]s is the image, %[2]s the CPU
// request, %[3]s the template's tier label.
const rollbackApp = `apiVersion: apps/v1
kind: Deployment
metadata: {name: shop, annotations: {refit.dev/rollback: auto, refit.dev/pre-pull: disabled}}
spec:
  replicas: 4
  strategy: {rollingUpdate: {maxUnavailable: 2}}
  selector: {matchLabels: {app: shop}}
  template:
    metadata:
      labels: {app: shop, tier: %[3]s}
      annotations: {kwok.refit.dev/restart-delay: 1s}
    spec:
      containers:
      - name: app
        image: %[1]q
        resizePolicy: [{resourceName: cpu, restartPolicy: RestartContainer}]
        resources: {requests: {cpu: %[2]s, memory: 64Mi}, limits: {memory: 128Mi}}
`

// TestInPlaceRollbackRestoresResourcesAndMetadata: one commit changes the
// image (to a bad one), the CPU request and a template label; the first
// batch fails to pull and refit.dev/rollback: auto rolls back. From a
// watch: no Pod recreated, never more than maxUnavailable unready. At the
// end every Pod runs the old image AND the old CPU request (spec and the
// node's status) and carries the old label, with the same UID, and the
// Deployment's template is the old one (what runs), released.
func TestInPlaceRollbackRestoresResourcesAndMetadata(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	writeManifests(t, dir, fmt.Sprintf(rollbackApp, "shop:1", "100m", "gold"))
	mustApplyDir(t, ns, dir)
	before := waitPodsWhere(t, ns, "app=shop", 4, 30*time.Second, "4 Pods ready", podReady)
	bw := watchBound(t, ns, groupOf(t, "deployment shop", "app=shop", 4, 2))

	writeManifests(t, dir, fmt.Sprintf(rollbackApp, "shop:does-not-exist", "200m", "silver"))
	start := time.Now()
	out, code := applyDir(t, ns, dir)
	t.Logf("refit apply: exit %d after %s\n%s", code, time.Since(start).Round(time.Millisecond), out)
	if code == 0 || !strings.Contains(out, "rolled back") || strings.Contains(out, "rollback failed") {
		t.Fatalf("refit apply: exit %d; want a failure, rolled back to the end", code)
	}

	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	after := waitPodsWhere(t, ns, "app=shop", 4, 30*time.Second, "4 Pods ready", podReady)
	sameUIDs(t, before, after)
	touched := 0
	for i := range after {
		pod := &after[i]
		if cs := containerStatus(pod, "app"); cs != nil && cs.RestartCount > 0 {
			touched++
		}
		switch {
		case !settledOn(pod, "app", "shop:1"):
			t.Errorf("pod %s: want shop:1 running again; %s", pod.Name, describePod(pod))
		case !sameCPU(specCPU(pod, "app"), "100m") || !sameCPU(runningCPU(pod, "app"), "100m"):
			t.Errorf("pod %s: cpu spec %s, status %s; want the old 100m: %s", pod.Name, specCPU(pod, "app"), runningCPU(pod, "app"), describeResize(pod))
		case pod.Labels["tier"] != "gold":
			t.Errorf("pod %s: label tier=%q; want the old gold", pod.Name, pod.Labels["tier"])
		}
		if conds := resizeConditions(pod); len(conds) > 0 {
			t.Errorf("pod %s: resize conditions left: %s", pod.Name, strings.Join(conds, ", "))
		}
	}
	if touched == 0 || touched > 2 {
		t.Errorf("%d Pods restarted; want the first batch (1 or 2), rolled back", touched)
	}
	dep, err := bed.Client.AppsV1().Deployments(ns).Get(t.Context(), "shop", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if cpu := c.Resources.Requests[corev1.ResourceCPU]; !sameCPU(cpu.String(), "100m") || c.Image != "shop:1" || dep.Spec.Template.Labels["tier"] != "gold" || dep.Spec.Paused {
		t.Errorf("deployment template: cpu %s, image %s, tier %q, paused %v; want the old 100m, shop:1, gold, not paused", cpu.String(), c.Image, dep.Spec.Template.Labels["tier"], dep.Spec.Paused)
	}
	noRecordLeft(t, ns, "Deployment", "shop")
}

// TestInPlaceRollbackOfAnInfeasibleResize: a Guaranteed Pod on a node
// whose CPU manager is static cannot be resized (the node says
// Infeasible); with refit.dev/rollback: auto the rollout stops at the first
// Pod and rolls it back: its spec asks for the old CPU again, the node
// drops its pending resize, no Pod restarted or went unready, the template
// asks for the old CPU and carries the old annotation, and the hold is
// released.
func TestInPlaceRollbackOfAnInfeasibleResize(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	node := resizeNode(t, "8", map[string]string{kubeletsim.CPUManagerPolicyAnnotation: "static"})
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata: {name: pinned, annotations: {refit.dev/rollback: auto, refit.dev/progress-deadline: 2m}}
spec:
  replicas: 2
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: pinned}}
  template:
    metadata: {labels: {app: pinned}, annotations: {owner: blue}}
    spec:
      nodeSelector: {kubernetes.io/hostname: ` + node + `}
      tolerations: [{key: refit.dev/resize-test, operator: Exists}]
      containers:
      - name: app
        image: "nginx:1.27"
        resources: {requests: {cpu: "1", memory: 64Mi}, limits: {cpu: "1", memory: 64Mi}}
`
	writeManifests(t, dir, manifest)
	mustApplyDir(t, ns, dir)
	before := waitPodsWhere(t, ns, "app=pinned", 2, 30*time.Second, "2 Pods ready", podReady)
	qw := watchQuiet(t, ns)

	writeManifests(t, dir, strings.NewReplacer(`cpu: "1"`, `cpu: "2"`, "owner: blue", "owner: green").Replace(manifest))
	out, code := applyDir(t, ns, dir)
	t.Logf("refit apply: exit %d\n%s", code, out)
	if code == 0 || !strings.Contains(out, corev1.PodReasonInfeasible) || !strings.Contains(out, "rolled back") || strings.Contains(out, "rollback failed") {
		t.Fatalf("refit apply: exit %d; want a failure naming %s, rolled back to the end", code, corev1.PodReasonInfeasible)
	}
	after := waitPodsWhere(t, ns, "app=pinned", 2, 30*time.Second, "back on cpu 1, no resize condition", func(pod *corev1.Pod) bool {
		return podReady(pod) && sameCPU(specCPU(pod, "app"), "1") && sameCPU(runningCPU(pod, "app"), "1") && len(resizeConditions(pod)) == 0
	})
	rep := qw.report()
	if rep.uids != 2 || len(rep.deleted) > 0 || len(rep.restarted()) > 0 || rep.maxUnavailable > 0 {
		t.Errorf("watch: %d UIDs (want 2), deleted %v, restarted %v, most unready at once %d (want 0)", rep.uids, rep.deleted, rep.restarted(), rep.maxUnavailable)
	}
	sameUIDs(t, before, after)
	for _, pod := range after {
		if pod.Annotations["owner"] != "blue" {
			t.Errorf("pod %s: annotation owner=%q; want the old blue", pod.Name, pod.Annotations["owner"])
		}
	}
	dep, err := bed.Client.AppsV1().Deployments(ns).Get(t.Context(), "pinned", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := dep.Spec.Template
	if cpu := tmpl.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; !sameCPU(cpu.String(), "1") || tmpl.Annotations["owner"] != "blue" {
		t.Errorf("deployment template: cpu %s, owner %q; want the old 1, blue", cpu.String(), tmpl.Annotations["owner"])
	}
	noRecordLeft(t, ns, "Deployment", "pinned")
}
