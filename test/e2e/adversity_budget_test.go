//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
)

// Issue 10, cases 8, 11, 13, 14 and 15: the budget of StatefulSets and
// DaemonSets as upstream counts it, a partition in Git, stale Pod state, and
// the smaller ones (annotations of other tools, a scale mid-rollout, a bare
// Pod without labels). Every test drives the refit binary as a user does and
// asserts the bound and the Pod UIDs from a watch.

// The bed reports status.observedGeneration as the kubelet does: every
// status written after acting on the spec names the generation acted on,
// also when one bad image replaces another.
func TestBedReportsObservedGeneration(t *testing.T) {
	ns := namespace(t)
	pod := twoContainerPod(ns, "gen", false)
	createPod(t, pod)
	observed := func(gen int64, what string, cond func(*corev1.Pod) bool) {
		t.Helper()
		waitUntil(t, time.Minute, fmt.Sprintf("%s at generation and observedGeneration %d", what, gen), func(ctx context.Context) (bool, string) {
			p, err := bed.Client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return false, err.Error()
			}
			return p.Generation == gen && p.Status.ObservedGeneration == gen && cond(p),
				fmt.Sprintf("generation %d, observedGeneration %d, %s", p.Generation, p.Status.ObservedGeneration, describePod(p))
		})
	}
	waiting := func(reason, image string) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			cs := containerStatus(p, "app")
			return cs != nil && cs.Image == image && cs.State.Waiting != nil && (cs.State.Waiting.Reason == reason || reason == "pull" && isPullError(cs.State.Waiting.Reason))
		}
	}
	running := func(image string) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			cs := containerStatus(p, "app")
			return podReady(p) && cs != nil && cs.Image == image && cs.State.Running != nil
		}
	}
	observed(1, "Running", running("nginx:1.27"))
	patchImage(t, ns, pod.Name, 0, "nginx:1.27", "nginx:1.28")
	observed(2, "the new image running", running("nginx:1.28"))
	patchImage(t, ns, pod.Name, 0, "nginx:1.28", "nginx:bad")
	observed(3, "a pull error", waiting("pull", "nginx:bad"))
	waitPod(t, ns, pod.Name, 30*time.Second, "ImagePullBackOff, still at observedGeneration 3", func(p *corev1.Pod) bool {
		return waiting("ImagePullBackOff", "nginx:bad")(p) && p.Status.ObservedGeneration == 3
	})
	// Another bad image over a failing pull is pulled again: the status
	// names it, at the new generation.
	patchImage(t, ns, pod.Name, 0, "nginx:bad", "nginx:does-not-exist")
	observed(4, "a pull error for the second bad image", waiting("pull", "nginx:does-not-exist"))
	patchImage(t, ns, pod.Name, 0, "nginx:does-not-exist", "nginx:1.27")
	observed(5, "the good image running again", running("nginx:1.27"))
}

const percentStatefulSet = `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 5
  serviceName: db
  podManagementPolicy: Parallel
  ordinals: {start: 5}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 30%}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: db, image: "db:VERSION"}
`

// Case 8: a StatefulSet's percentage maxUnavailable rounds down with a
// minimum of 1, as the StatefulSet controller rounds it (30% of 5 is 1),
// and Pods numbered from spec.ordinals.start go in place like any others.
func TestAdversityStatefulSetPercentBudgetAndOrdinals(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	writeManifests(t, dir, strings.ReplaceAll(percentStatefulSet, "VERSION", "1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=db", 5, "db", "db:1", time.Minute)
	var names []string
	for _, p := range before {
		names = append(names, p.Name)
	}
	if got := strings.Join(names, ","); got != "db-5,db-6,db-7,db-8,db-9" {
		t.Fatalf("pods %s, want db-5 … db-9 (spec.ordinals.start 5)", got)
	}

	bw := watchBound(t, ns, groupOf(t, "statefulset db (30% of 5)", "app=db", 5, 1))
	writeManifests(t, dir, strings.ReplaceAll(percentStatefulSet, "VERSION", "2"))
	assertPlanLine(t, ns, dir, "StatefulSet.apps/"+ns+"/db", "update in place", "")
	mustApplyDir(t, ns, dir, "--grace", "0s")
	after := waitOnImage(t, ns, "app=db", 5, "db", "db:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	sameUIDs(t, before, after)
	for _, p := range after {
		if cs := containerStatus(&p, "db"); cs.RestartCount != 1 {
			t.Errorf("pod %s: restarted %d times, want once (in place)", p.Name, cs.RestartCount)
		}
	}
	waitStatefulSetSettled(t, ns, "db", 5, 0)
	noRecordLeft(t, ns, "StatefulSet", "db")
}

// Case 11 (a DaemonSet with maxUnavailable 0 and maxSurge 1) is in
// surge_test.go: it now goes in place with extra Pods.

const partitionStatefulSet = `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: 5
  serviceName: web
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {partition: 2, maxUnavailable: 2}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "web:VERSION"}
`

// Case 13: a partition in Git is honoured as upstream honours it — only
// ordinals at or above it move — and the bump after that still goes in
// place (a StatefulSet whose current and update revisions differ because
// of its own partition is not a rollout in progress).
func TestAdversityStatefulSetPartitionInGit(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(partitionStatefulSet, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=web", 5, "web", "web:1", time.Minute)
	bw := watchBound(t, ns, groupOf(t, "statefulset web", "app=web", 5, 2))

	// want: ordinals >= 2 on image, restarted restarts times; 0 and 1 untouched.
	settled := func(image string, restarts int32) func(*corev1.Pod) bool {
		return func(p *corev1.Pod) bool {
			cs := containerStatus(p, "web")
			if cs == nil || !podReady(p) {
				return false
			}
			if p.Name == "web-0" || p.Name == "web-1" {
				return cs.Image == "web:1" && specOf(p, "web") == "web:1" && cs.RestartCount == 0
			}
			return cs.Image == image && specOf(p, "web") == image && cs.RestartCount == restarts
		}
	}
	for i, v := range []string{"2", "3"} {
		writeManifests(t, dir, manifest(v))
		assertPlanLine(t, ns, dir, "StatefulSet.apps/"+ns+"/web", "update in place", "")
		mustApplyDir(t, ns, dir, "--grace", "0s")
		waitPodsWhere(t, ns, "app=web", 5, time.Minute, "web-2…4 on web:"+v+" in place, web-0 and web-1 untouched on web:1",
			settled("web:"+v, int32(i+1)))
		waitStatefulSetSettled(t, ns, "web", 3, 2)
		noRecordLeft(t, ns, "StatefulSet", "web")
	}
	after := livePods(context.Background(), t, ns, "app=web")
	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	sameUIDs(t, before, after)
	if len(r.patched) != 3 {
		t.Errorf("pods patched in place: %v, want web-2, web-3, web-4", r.patched)
	}
}

const staleDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  annotations: {refit.dev/progress-deadline: "6s"}
spec:
  replicas: 8
  strategy: {rollingUpdate: {maxUnavailable: 2}}
  selector: {matchLabels: {app: api}}
  template:
    metadata:
      labels: {app: api}
      annotations: {kwok.refit.dev/restart-delay: 1s}
    spec:
      containers:
      - {name: api, image: "api:VERSION"}
`

// Case 14, stale state: Pods still carry the in-place state of an earlier,
// finished rollout (api:2). A later rollout is killed early (api:3), and a
// revert to api:2 takes its Pods back. A Pod on api:2 that goes briefly
// unready during that rollout (a readiness probe) is unavailable — it counts
// against the bound — but it is not a failed restart: the state it carries
// belongs to another rollout, long past its deadline.
func TestAdversityStaleStateBrieflyUnready(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(staleDeployment, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=api", 8, "api", "api:1", time.Minute)

	writeManifests(t, dir, manifest("2"))
	mustApplyDir(t, ns, dir, "--grace", "0s")
	waitOnImage(t, ns, "app=api", 8, "api", "api:2", time.Minute)
	firstDone := time.Now()

	writeManifests(t, dir, manifest("3"))
	p := startApply(t, ns, dir, "--grace", "0s")
	waitUntil(t, time.Minute, "a pod patched to api:3", func(ctx context.Context) (bool, string) {
		n := 0
		for _, pod := range livePods(ctx, t, ns, "app=api") {
			if specOf(&pod, "api") == "api:3" {
				n++
			}
		}
		return n > 0, fmt.Sprintf("%d patched", n)
	})
	if !p.kill() {
		t.Fatalf("refit finished api:3 before it was killed: the test proves nothing\n%s", p.out.String())
	}
	// The kubelet finishes the restarts refit started.
	pods := waitPodsWhere(t, ns, "app=api", 8, time.Minute, "Ready", podReady)
	// The victim: a Pod the killed rollout did not reach, preferably one
	// that still carries the first rollout's state (an engine may clear it
	// when a rollout ends; the Pod must not fail either way).
	var victim string
	for _, pod := range pods {
		_, stale := pod.Annotations[inplace.StateAnnotation]
		if specOf(&pod, "api") == "api:2" && (victim == "" || stale) {
			victim = pod.Name
		}
	}
	if victim == "" {
		t.Fatalf("no pod left on api:2 after the kill")
	}
	// The first rollout's state must be older than the progress deadline.
	time.Sleep(time.Until(firstDone.Add(8 * time.Second)))

	bw := watchBound(t, ns, groupOf(t, "deployment api", "app=api", 8, 2))
	setContainersReady(t, ns, victim, false)
	waitPod(t, ns, victim, 30*time.Second, "unready", func(p *corev1.Pod) bool { return !podReady(p) })
	writeManifests(t, dir, manifest("2"))
	p = startApply(t, ns, dir, "--grace", "0s")
	select {
	case <-p.done:
	case <-time.After(3 * time.Second): // how long the probe fails
	}
	setContainersReady(t, ns, victim, true)
	if out, code := p.finish(t, 2*time.Minute); code != 0 {
		t.Fatalf("revert to api:2 with %s briefly unready: exit %d, want 0\n%s", victim, code, out)
	}
	after := waitOnImage(t, ns, "app=api", 8, "api", "api:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	sameUIDs(t, before, after)
	noRecordLeft(t, ns, "Deployment", "api")
}

const recreatedStatefulSet = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  annotations: {refit.dev/progress-deadline: "40s", refit.dev/grace-seconds: "2"}
spec:
  replicas: 6
  serviceName: db
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 2}
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {kwok.refit.dev/restart-delay: 3s}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - {name: db, image: "db:VERSION"}
`

// Case 14, a Pod recreated under the same name: a StatefulSet Pod that
// refit is about to patch (its gate just went False, the grace period runs)
// is deleted; the controller creates it again, same name, new UID, from the
// held (old) revision, before the grace period ends. refit must tell it from
// the Pod it read — not patch it on the strength of the old Pod's state —
// update it too, and finish, the missing Pod counted against the bound while
// it was gone.
func TestAdversityStatefulSetPodRecreatedMidRollout(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(recreatedStatefulSet, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=db", 6, "db", "db:1", time.Minute)
	bw := watchBound(t, ns, groupOf(t, "statefulset db", "app=db", 6, 2))

	writeManifests(t, dir, manifest("2"))
	p := startApply(t, ns, dir, "--grace", "0s")
	var victim corev1.Pod
	waitUntil(t, time.Minute, "a pod's gate set False", func(ctx context.Context) (bool, string) {
		for _, pod := range livePods(ctx, t, ns, "app=db") {
			for _, c := range pod.Status.Conditions {
				if c.Type == inplace.GateCondition && c.Status == corev1.ConditionFalse && specOf(&pod, "db") == "db:1" {
					victim = pod
					return true, ""
				}
			}
		}
		return false, "all gates True"
	})
	if err := bed.Client.CoreV1().Pods(ns).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod %s: %v", victim.Name, err)
	}
	if out, code := p.finish(t, 2*time.Minute); code != 0 {
		t.Fatalf("rollout with %s recreated: exit %d, want 0\n%s", victim.Name, code, out)
	}
	after := waitOnImage(t, ns, "app=db", 6, "db", "db:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	if fmt.Sprint(r.deleted) != "["+victim.Name+"]" || fmt.Sprint(r.created) != "["+victim.Name+"]" {
		t.Errorf("deleted %v, created %v: want only %s, deleted by the test and created again", r.deleted, r.created, victim.Name)
	}
	var kept []corev1.Pod
	for _, pod := range after {
		if pod.Name != victim.Name {
			kept = append(kept, pod)
		} else if pod.UID == victim.UID {
			t.Errorf("pod %s kept its UID: it was not recreated, the test proves nothing", pod.Name)
		}
	}
	sameUIDs(t, before, kept)
	waitStatefulSetSettled(t, ns, "db", 6, 0)
	noRecordLeft(t, ns, "StatefulSet", "db")
}

const annotatedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {refit.dev/grace-seconds: "2"}
spec:
  replicas: 6
  strategy: {rollingUpdate: {maxUnavailable: 2}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - {name: web, image: "web:VERSION"}
`

// Case 15: annotations another tool writes on a Pod while refit works on it
// survive refit's writes. The Pods start with no annotations at all, and the
// first ones are annotated during the gate's grace period, between refit's
// read of the Pod and its patch.
func TestAdversityForeignAnnotationsSurvive(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(annotatedDeployment, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=web", 6, "web", "web:1", time.Minute)
	bw := watchBound(t, ns, groupOf(t, "deployment web", "app=web", 6, 2))
	annotate := func(key string) {
		for _, pod := range livePods(context.Background(), t, ns, "app=web") {
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"tool"}}}`, key)
			if _, err := bed.Client.CoreV1().Pods(ns).Patch(context.Background(), pod.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: "other-tool"}); err != nil {
				t.Fatalf("annotate pod %s: %v", pod.Name, err)
			}
		}
	}

	writeManifests(t, dir, manifest("2"))
	p := startApply(t, ns, dir)
	waitUntil(t, time.Minute, "a pod's gate set False", func(ctx context.Context) (bool, string) {
		for _, pod := range livePods(ctx, t, ns, "app=web") {
			for _, c := range pod.Status.Conditions {
				if c.Type == inplace.GateCondition && c.Status == corev1.ConditionFalse {
					return true, ""
				}
			}
		}
		return false, "all gates True"
	})
	annotate("example.com/early")
	waitUntil(t, time.Minute, "the second batch patched", func(ctx context.Context) (bool, string) {
		n := 0
		for _, pod := range livePods(ctx, t, ns, "app=web") {
			if specOf(&pod, "web") == "web:2" {
				n++
			}
		}
		return n > 2, fmt.Sprintf("%d patched", n)
	})
	annotate("example.com/late")
	if out, code := p.finish(t, 2*time.Minute); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	after := waitOnImage(t, ns, "app=web", 6, "web", "web:2", time.Minute)
	for _, pod := range after {
		for _, key := range []string{"example.com/early", "example.com/late"} {
			if pod.Annotations[key] != "tool" {
				t.Errorf("pod %s: annotation %s lost; annotations %v", pod.Name, key, pod.Annotations)
			}
		}
	}
	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	sameUIDs(t, before, after)
}

const scaledDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  strategy: {rollingUpdate: {maxUnavailable: 25%}}
  selector: {matchLabels: {app: api}}
  template:
    metadata:
      labels: {app: api}
      annotations: {kwok.refit.dev/restart-delay: 3s}
    spec:
      containers:
      - {name: api, image: "api:VERSION"}
`

// scaleDeployment sets replicas through the scale subresource, as an HPA
// (or kubectl scale) does.
func scaleDeployment(t *testing.T, ns, name string, replicas int) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, replicas)
	if _, err := bed.Client.AppsV1().Deployments(ns).Patch(context.Background(), name, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "hpa-like"}, "scale"); err != nil {
		t.Fatalf("scale deployment %s to %d: %v", name, replicas, err)
	}
}

// Case 15: the bound follows the live replicas. Git leaves replicas to an
// autoscaler; it scales the Deployment from 16 to 8 mid-rollout, and from
// then on 25% means 2, not 4.
func TestAdversityScaleDownMidRollout(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(scaledDeployment, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	scaleDeployment(t, ns, "api", 16)
	before := waitOnImage(t, ns, "app=api", 16, "api", "api:1", time.Minute)
	bw := watchBound(t, ns, groupOf(t, "deployment api", "app=api", 16, 4))

	writeManifests(t, dir, manifest("2"))
	p := startApply(t, ns, dir, "--grace", "0s")
	waitUntil(t, time.Minute, "a pod patched to api:2", func(ctx context.Context) (bool, string) {
		for _, pod := range livePods(ctx, t, ns, "app=api") {
			if specOf(&pod, "api") == "api:2" {
				return true, ""
			}
		}
		return false, "none"
	})
	scaleDeployment(t, ns, "api", 8)
	waitUntil(t, 30*time.Second, "8 pods left after the scale-down", func(ctx context.Context) (bool, string) {
		n := len(livePods(ctx, t, ns, "app=api"))
		return n == 8, fmt.Sprintf("%d pods", n)
	})
	bw.rebound("deployment api", 8, 2)
	if p.exited() {
		t.Fatalf("refit finished before the scale-down: the test proves nothing\n%s", p.out.String())
	}
	if out, code := p.finish(t, 2*time.Minute); code != 0 {
		t.Fatalf("apply: exit %d\n%s", code, out)
	}
	after := waitOnImage(t, ns, "app=api", 8, "api", "api:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	if len(r.created) > 0 {
		t.Errorf("pods created: %v; want the scale-down's survivors updated in place", r.created)
	}
	sameUIDs(t, before, after)
	for _, pod := range after {
		if cs := containerStatus(&pod, "api"); cs.RestartCount != 1 {
			t.Errorf("pod %s: restarted %d times, want once", pod.Name, cs.RestartCount)
		}
	}
	noRecordLeft(t, ns, "Deployment", "api")
}

const barePods = `apiVersion: v1
kind: Pod
metadata: {name: solo}
spec:
  nodeSelector: {refit.dev/node-type: kwok}
  containers:
  - {name: solo, image: "solo:VERSION"}
---
apiVersion: v1
kind: Pod
metadata:
  name: other
  labels: {app: other}
spec:
  nodeSelector: {refit.dev/node-type: kwok}
  containers:
  - {name: other, image: "other:1"}
`

// Case 15: a bare Pod without labels goes in place like any other, and its
// neighbour in the namespace is left alone.
func TestAdversityBarePodWithoutLabels(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(barePods, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitPodsWhere(t, ns, "", 2, time.Minute, "Ready", podReady)
	bw := watchBound(t, ns, groupOf(t, "solo and other", "", 2, 1))

	writeManifests(t, dir, manifest("2"))
	assertPlanLine(t, ns, dir, "Pod/"+ns+"/solo", "update in place", "")
	mustApplyDir(t, ns, dir, "--grace", "0s")
	after := waitPodsWhere(t, ns, "", 2, time.Minute, "Ready", podReady)
	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	sameUIDs(t, before, after)
	for _, pod := range after {
		var want string
		var restarts int32
		switch pod.Name {
		case "solo":
			want, restarts = "solo:2", 1
		default:
			want, restarts = "other:1", 0
		}
		if cs := pod.Status.ContainerStatuses[0]; cs.Image != want || cs.RestartCount != restarts {
			t.Errorf("pod %s: %s, want %s restarted %d times", pod.Name, describePod(&pod), want, restarts)
		}
	}
	if fmt.Sprint(r.downed) != "[solo]" || fmt.Sprint(r.patched) != "[solo]" {
		t.Errorf("pods taken down %v, patched %v: want solo only", r.downed, r.patched)
	}
}

const gatedBarePod = `apiVersion: v1
kind: Pod
metadata:
  name: lone
  annotations: {refit.dev/grace-seconds: "0", kwok.refit.dev/restart-delay: 3s}
spec:
  nodeSelector: {refit.dev/node-type: kwok}
  readinessGates: [{conditionType: InPlaceUpdateReady}]
  containers:
  - {name: lone, image: "lone:VERSION"}
`

// Case 15: a gated bare Pod, refit killed after it patched the Pod and
// before it opened the gate again. The Pod is the workload, so nothing else
// holds a record of the rollout: the next refit apply must still leave the
// Pod Ready with its gate True, on the new image, same UID.
func TestAdversityBarePodKilledBetweenPatchAndGate(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(gatedBarePod, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "", 1, "lone", "lone:1", time.Minute)

	writeManifests(t, dir, manifest("2"))
	p := startApply(t, ns, dir)
	waitPod(t, ns, "lone", time.Minute, "patched to lone:2", func(pod *corev1.Pod) bool { return specOf(pod, "lone") == "lone:2" })
	if !p.kill() {
		t.Fatalf("refit finished before it was killed: the test proves nothing\n%s", p.out.String())
	}
	// The 3 s restart outlives the kill: the gate is still False.
	pod := waitPod(t, ns, "lone", time.Minute, "the new image running", func(pod *corev1.Pod) bool {
		cs := containerStatus(pod, "lone")
		return cs != nil && cs.Image == "lone:2" && cs.Ready
	})
	for _, c := range pod.Status.Conditions {
		if c.Type == inplace.GateCondition && c.Status == corev1.ConditionTrue {
			t.Fatalf("the gate was opened before the kill: the test proves nothing")
		}
	}
	mustApplyDir(t, ns, dir)
	after := waitOnImage(t, ns, "", 1, "lone", "lone:2", 30*time.Second)
	sameUIDs(t, before, after)
}

const quotaDaemonSet = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  annotations: {refit.dev/progress-deadline: "30s"}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 2}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {refit.dev/node-type: kwok}
      containers:
      - {name: agent, image: "agent:VERSION"}
`

// Case 11: a node that should run the DaemonSet's Pod and has none (a
// ResourceQuota refuses it) counts as unavailable, as the DaemonSet
// controller counts it: with maxUnavailable 2 and one node already without
// a Pod, refit takes down one more at a time, never two.
func TestAdversityDaemonSetNodeWithoutPodCounts(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	nodes, err := bed.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: "refit.dev/node-type=kwok"})
	if err != nil {
		t.Fatal(err)
	}
	n := len(nodes.Items)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse(fmt.Sprint(n - 1))}},
	}
	if _, err := bed.Client.CoreV1().ResourceQuotas(ns).Create(context.Background(), quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The quota controller must have counted before the DaemonSet controller
	// creates Pods, or the quota admits them all.
	waitUntil(t, 30*time.Second, "the quota counted", func(ctx context.Context) (bool, string) {
		q, err := bed.Client.CoreV1().ResourceQuotas(ns).Get(ctx, "pods", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		_, ok := q.Status.Used[corev1.ResourcePods]
		return ok, fmt.Sprintf("%v", q.Status)
	})
	manifest := func(v string) string { return strings.ReplaceAll(quotaDaemonSet, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	// No --wait: the DaemonSet is never healthy while the quota holds.
	if out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns); code != 0 {
		t.Fatalf("refit apply: exit %d\n%s", code, out)
	}
	before := waitOnImage(t, ns, "app=agent", n-1, "agent", "agent:1", time.Minute)
	waitUntil(t, 30*time.Second, fmt.Sprintf("the DaemonSet to want %d Pods", n), func(ctx context.Context) (bool, string) {
		ds, err := bed.Client.AppsV1().DaemonSets(ns).Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return int(ds.Status.DesiredNumberScheduled) == n, fmt.Sprintf("%+v", ds.Status)
	})

	g := groupOf(t, "daemonset agent (nodes without an available Pod)", "app=agent", n, 2)
	g.perNode = true
	bw := watchBound(t, ns, g)
	writeManifests(t, dir, manifest("2"))
	// Every Pod that exists runs the current revision: a node the quota
	// keeps empty is unavailable, not a rollout in progress.
	assertPlanLine(t, ns, dir, "DaemonSet.apps/"+ns+"/agent", "update in place", "")
	out, code := runRefitCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--grace", "0s")
	t.Logf("refit apply: exit %d\n%s", code, out)
	after := waitOnImage(t, ns, "app=agent", n-1, "agent", "agent:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	r.assertNoneReplaced(t)
	sameUIDs(t, before, after)
	if code != 0 {
		t.Errorf("refit apply: exit %d, want 0: every Pod that exists was updated\n%s", code, out)
	}
}

// Case 11, mid-rollout: a DaemonSet Pod not yet updated is deleted while a
// ResourceQuota keeps the controller from creating it again. Its node has no
// Pod from then on and counts as unavailable: refit, which may take down 2
// nodes' Pods, takes down at most one more. (The deletion itself may meet
// refit's batch in flight; the bound is checked from the moment that batch
// is back.) The DaemonSet runs on 6 nodes of its own, so that enough Pods
// are left to patch after the deletion for a wrong count to show.
func TestAdversityDaemonSetNodeLosesPodMidRollout(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	const n = 6
	pool := ns[len(ns)-5:]
	var nodes []*corev1.Node
	for i := 0; i < n; i++ {
		node := cluster.KwokNode(fmt.Sprintf("pool-%s-%d", pool, i), 10)
		node.Labels[cluster.NodeTypeLabel] = "kwok-pool" // not a node other tests place Pods on
		node.Labels["refit.dev/pool"] = pool
		nodes = append(nodes, node)
	}
	addNodes(t, nodes...)
	manifest := func(v string) string {
		m := strings.ReplaceAll(quotaDaemonSet, "VERSION", v)
		m = strings.Replace(m, "nodeSelector: {refit.dev/node-type: kwok}", "nodeSelector: {refit.dev/pool: "+pool+"}", 1)
		return strings.Replace(m, "    metadata: {labels: {app: agent}}",
			"    metadata:\n      labels: {app: agent}\n      annotations: {kwok.refit.dev/restart-delay: 3s}", 1)
	}
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=agent", n, "agent", "agent:1", time.Minute)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: ns},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse(fmt.Sprint(n - 1))}},
	}
	if _, err := bed.Client.CoreV1().ResourceQuotas(ns).Create(context.Background(), quota, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the quota counted", func(ctx context.Context) (bool, string) {
		q, err := bed.Client.CoreV1().ResourceQuotas(ns).Get(ctx, "pods", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		used := q.Status.Used[corev1.ResourcePods]
		return used.Value() == int64(n), fmt.Sprintf("%v", q.Status)
	})

	g := groupOf(t, "daemonset agent (nodes without an available Pod)", "app=agent", n, 2)
	g.perNode = true
	bw := watchBound(t, ns, g)
	writeManifests(t, dir, manifest("2"))
	p := startApply(t, ns, dir, "--grace", "0s")
	var victim corev1.Pod
	waitUntil(t, time.Minute, "a pod patched to agent:2 and one still on agent:1", func(ctx context.Context) (bool, string) {
		var patched, old []corev1.Pod
		for _, pod := range livePods(ctx, t, ns, "app=agent") {
			if specOf(&pod, "agent") == "agent:2" {
				patched = append(patched, pod)
			} else {
				old = append(old, pod)
			}
		}
		if len(patched) > 0 && len(old) > 0 {
			victim = old[len(old)-1]
			return true, ""
		}
		return false, fmt.Sprintf("%d patched, %d old", len(patched), len(old))
	})
	if err := bed.Client.CoreV1().Pods(ns).Delete(context.Background(), victim.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete pod %s: %v", victim.Name, err)
	}
	// The deletion races refit's first batch: a Pod patched just before it
	// may still be Ready on its old container and go down just after. The
	// bound restarts once the count has stayed within it for a second, so
	// that what follows is refit's own doing, decided with the loss known.
	var settled time.Time
	waitUntil(t, time.Minute, "the deletion seen, the batch in flight at the deletion back", func(context.Context) (bool, string) {
		c := bw.current(g.name)
		if !bw.sawDeleted(victim.UID) || c > 2 {
			settled = time.Time{}
		} else if settled.IsZero() {
			settled = time.Now()
		}
		return !settled.IsZero() && time.Since(settled) >= time.Second,
			fmt.Sprintf("deletion seen %v, %d nodes without an available Pod", bw.sawDeleted(victim.UID), c)
	})
	bw.rebound(g.name, n, 2)
	if p.exited() {
		t.Fatalf("refit finished before the node lost its Pod: the test proves nothing\n%s", p.out.String())
	}
	out, code := p.finish(t, 2*time.Minute)
	t.Logf("refit apply: exit %d\n%s", code, out)
	after := waitOnImage(t, ns, "app=agent", n-1, "agent", "agent:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	if len(r.created) > 0 || fmt.Sprint(r.deleted) != "["+victim.Name+"]" {
		t.Errorf("created %v, deleted %v: want only %s deleted (by the test), none created (the quota)", r.created, r.deleted, victim.Name)
	}
	sameUIDs(t, before, after)
}
