//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// resizeApp is a Deployment (or StatefulSet) of 4 whose container restarts for a CPU
// resize (so its resize takes a share of maxUnavailable 2) and takes 2 s to
// come back: a kill lands while a batch restarts. %[1]s is the image, %[2]s
// the CPU request, %[3]s the kind and %[4]s its update strategy.
const resizeApp = `apiVersion: apps/v1
kind: %[3]s
metadata: {name: web, annotations: {refit.dev/pre-pull: disabled}}
spec:
  replicas: 4
%[4]s
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {kwok.refit.dev/restart-delay: 2s}
    spec:
      containers:
      - name: app
        image: %[1]q
        resizePolicy: [{resourceName: cpu, restartPolicy: RestartContainer}]
        resources: {requests: {cpu: %[2]s, memory: 64Mi}, limits: {memory: 128Mi}}
`

// specCPU is the CPU request a Pod's spec asks for.
func specCPU(pod *corev1.Pod, container string) string {
	if c := podContainerOf(pod, container); c != nil {
		q := c.Resources.Requests[corev1.ResourceCPU]
		return q.String()
	}
	return ""
}

func podContainerOf(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// resizeConditions are the resize conditions a Pod still carries.
func resizeConditions(pod *corev1.Pod) []string {
	var out []string
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodResizePending || c.Type == corev1.PodResizeInProgress {
			out = append(out, fmt.Sprintf("%s %s", c.Type, c.Reason))
		}
	}
	return out
}

// TestInPlaceResizeKilledMidway: a CPU request change of a Deployment
// (also with an image change) and of a StatefulSet rolled out by `refit apply`, SIGKILLed once the
// first batch is resized and while it restarts, then run again to its end.
// From a watch: no Pod recreated, never more than maxUnavailable unready.
// At the end every Pod runs the new CPU request (spec and the node's
// status) and image, restarted exactly once (resized once, not again by
// the second refit), no resize condition is left, the workload's template
// asks for the new request (a StatefulSet's controller counts every Pod
// updated) and no rollout record is left.
func TestInPlaceResizeKilledMidway(t *testing.T) {
	const (
		deployment  = "  strategy: {rollingUpdate: {maxUnavailable: 2}}"
		statefulSet = "  serviceName: web\n  podManagementPolicy: Parallel\n  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 2}}"
	)
	for _, tc := range []struct {
		name     string
		kind     string
		from, to string // images
	}{
		{name: "resources", kind: "Deployment", from: "app:1", to: "app:1"},
		{name: "with-image", kind: "Deployment", from: "app:1", to: "app:2"},
		{name: "statefulset", kind: "StatefulSet", from: "app:1", to: "app:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, dir := namespace(t), t.TempDir()
			strategy := deployment
			if tc.kind == "StatefulSet" {
				strategy = statefulSet
			}
			writeManifests(t, dir, fmt.Sprintf(resizeApp, tc.from, "100m", tc.kind, strategy))
			start := time.Now()
			mustApplyDir(t, ns, dir)
			t.Logf("first apply: %s", time.Since(start).Round(time.Millisecond))
			before := waitPodsWhere(t, ns, "app=web", 4, 30*time.Second, "4 Pods ready", podReady)
			bw := watchBound(t, ns, groupOf(t, strings.ToLower(tc.kind)+" web", "app=web", 4, 2))

			writeManifests(t, dir, fmt.Sprintf(resizeApp, tc.to, "200m", tc.kind, strategy))
			start = time.Now()
			p := startApply(t, ns, dir)
			waitFor(t, 30*time.Second, "a Pod resized to 200m", func(ctx context.Context) bool {
				return countPodsWhere(ctx, ns, func(pod *corev1.Pod) bool { return sameCPU(specCPU(pod, "app"), "200m") }) > 0
			})
			if !p.kill() {
				out, _ := p.finish(t, time.Second)
				t.Fatalf("refit apply ended before the kill; output:\n%s", out)
			}
			resized := countPodsWhere(context.Background(), ns, func(pod *corev1.Pod) bool { return sameCPU(specCPU(pod, "app"), "200m") })
			t.Logf("SIGKILL after %s with %d of 4 Pods resized", time.Since(start).Round(time.Millisecond), resized)
			if resized == 4 {
				t.Logf("every Pod was resized before the kill: the second refit only waits")
			}
			out := mustApplyDir(t, ns, dir)
			t.Logf("second apply done after %s:\n%s", time.Since(start).Round(time.Millisecond), out)

			r := bw.report()
			r.assertBounds(t)
			r.assertNoneReplaced(t)
			after := waitPodsWhere(t, ns, "app=web", 4, 30*time.Second, "4 Pods ready", podReady)
			sameUIDs(t, before, after)
			was := restartsOf(before)
			for i := range after {
				pod := &after[i]
				cs := containerStatus(pod, "app")
				switch {
				case cs == nil:
					t.Errorf("pod %s: no status of container app", pod.Name)
				case !sameCPU(specCPU(pod, "app"), "200m") || !sameCPU(runningCPU(pod, "app"), "200m"):
					t.Errorf("pod %s: cpu spec %s, status %s; want 200m: %s", pod.Name, specCPU(pod, "app"), runningCPU(pod, "app"), describeResize(pod))
				case pod.Spec.Containers[0].Image != tc.to || !settledOn(pod, "app", tc.to):
					t.Errorf("pod %s: want %s running; %s", pod.Name, tc.to, describePod(pod))
				case cs.RestartCount != was[pod.Name]+1:
					t.Errorf("pod %s: %d restarts, %d before; want exactly one more (resized once)", pod.Name, cs.RestartCount, was[pod.Name])
				}
				if conds := resizeConditions(pod); len(conds) > 0 {
					t.Errorf("pod %s: resize conditions left: %s", pod.Name, strings.Join(conds, ", "))
				}
			}
			var tmpl corev1.PodTemplateSpec
			held := false
			if tc.kind == "StatefulSet" {
				sts := waitStatefulSetSettled(t, ns, "web", 4, 0)
				tmpl = sts.Spec.Template
			} else {
				dep, err := bed.Client.AppsV1().Deployments(ns).Get(t.Context(), "web", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				tmpl, held = dep.Spec.Template, dep.Spec.Paused
			}
			c := tmpl.Spec.Containers[0]
			if cpu := c.Resources.Requests[corev1.ResourceCPU]; !sameCPU(cpu.String(), "200m") || c.Image != tc.to || held {
				t.Errorf("%s template: cpu %s, image %s, paused %v; want 200m, %s, not paused", tc.kind, cpu.String(), c.Image, held, tc.to)
			}
			noRecordLeft(t, ns, tc.kind, "web")
		})
	}
}
