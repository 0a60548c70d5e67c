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

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
)

// fleetWatch follows every Pod of a namespace from a watch and keeps the
// invariants a rollout must hold: the most Pods unavailable at once, every
// UID seen, deletions and Pending Pods.
type fleetWatch struct {
	w    watch.Interface
	done chan struct{}

	mu             sync.Mutex
	ready          map[string]bool
	uids           map[types.UID]bool
	maxUnavailable int
	deleted        []string
	pending        []string
}

func watchFleet(t *testing.T, ns string) *fleetWatch {
	t.Helper()
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatal(err)
	}
	fw := &fleetWatch{done: make(chan struct{}), ready: map[string]bool{}, uids: map[types.UID]bool{}}
	for i := range list.Items {
		fw.observe(watch.Added, &list.Items[i])
	}
	fw.w, err = bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: notPrePull, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(fw.done)
		for ev := range fw.w.ResultChan() {
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				fw.observe(ev.Type, pod)
			}
		}
	}()
	t.Cleanup(fw.stop)
	return fw
}

func (fw *fleetWatch) observe(typ watch.EventType, pod *corev1.Pod) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.uids[pod.UID] = true
	if typ == watch.Deleted || pod.DeletionTimestamp != nil {
		fw.deleted = append(fw.deleted, pod.Name)
	}
	if pod.Status.Phase == corev1.PodPending && typ != watch.Deleted {
		fw.pending = append(fw.pending, pod.Name)
	}
	fw.ready[pod.Name] = typ != watch.Deleted && podReady(pod)
	n := 0
	for _, r := range fw.ready {
		if !r {
			n++
		}
	}
	if n > fw.maxUnavailable {
		fw.maxUnavailable = n
	}
}

func (fw *fleetWatch) stop() {
	if fw.w != nil {
		fw.w.Stop()
		<-fw.done
		fw.w = nil
	}
}

func (fw *fleetWatch) summary() (maxUnavailable int, uids int, deleted, pending []string) {
	fw.stop()
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.maxUnavailable, len(fw.uids), fw.deleted, fw.pending
}

func newEngine(t *testing.T) *inplace.Engine {
	t.Helper()
	e, err := inplace.New(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// waitReadyPods waits until n Pods of the namespace are Running and Ready,
// opening refit's readiness gate on them as refit does after an apply.
func waitReadyPods(t *testing.T, ns string, n int, workload *diff.Desired) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last string
	e := newEngine(t)
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		if workload != nil {
			obj := workload.Object.DeepCopy()
			obj.SetNamespace(ns)
			if _, err := e.OpenGates(ctx, obj); err != nil {
				return false, err
			}
		}
		list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
		if err != nil {
			return false, nil
		}
		ready := 0
		for i := range list.Items {
			if podReady(&list.Items[i]) && list.Items[i].Status.Phase == corev1.PodRunning {
				ready++
			}
		}
		pods, last = list.Items, fmt.Sprintf("%d of %d pods ready", ready, len(list.Items))
		return ready == n && len(list.Items) == n, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: want %d ready pods: %s", ns, n, last)
	}
	return pods
}

func uidsOf(pods []corev1.Pod) map[string]types.UID {
	m := map[string]types.UID{}
	for _, p := range pods {
		m[p.Name] = p.UID
	}
	return m
}

// rolloutCase is one in-place rollout: manifests applied first, then the
// same manifests with one image changed, rolled out by the engine.
type rolloutCase struct {
	manifest   string
	pods       int
	bound      int // the workload's maxUnavailable, resolved
	from, to   string
	container  string
	kindToBump string
	// reported is the image the node reports once updated (default: to).
	reported string
}

func runRollout(t *testing.T, tc rolloutCase) (string, inplace.Result) {
	t.Helper()
	ns := namespace(t)
	base := parseObjects(t, tc.manifest)
	applyForTest(t, ns, base)
	before := waitReadyPods(t, ns, tc.pods, &base[0])

	bumped := parseObjects(t, strings.ReplaceAll(tc.manifest, `"`+tc.from+`"`, `"`+tc.to+`"`))
	p := plan(t, ns, bumped)
	change := p.Changes[0]
	if change.Class != diff.ImageOnly || change.Path != diff.PathInPlace {
		t.Fatalf("plan: %s %s %s, want ImageOnly InPlace (fields %v)", change.Action, change.Class, change.Path, change.Fields)
	}
	fw := watchFleet(t, ns)
	opts := inplace.DefaultOptions()
	opts.Grace = 0
	var batches []inplace.Progress
	opts.Progress = func(p inplace.Progress) { batches = append(batches, p) }
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := newEngine(t).Rollout(ctx, change, opts)
	if err != nil {
		t.Fatalf("rollout: %v", err)
	}
	if res.Outcome != inplace.Succeeded {
		return ns, res
	}
	maxUnavailable, nUIDs, deleted, pending := fw.summary()
	t.Logf("%s: %d pods in %s, %d passes with patches, most unavailable at once %d (bound %d)",
		change.Ref, res.Total, res.Duration.Round(time.Millisecond), len(batches), maxUnavailable, tc.bound)

	after := waitReadyPods(t, ns, tc.pods, &bumped[0])
	if maxUnavailable > tc.bound {
		t.Errorf("%d pods unavailable at once, bound %d", maxUnavailable, tc.bound)
	}
	if nUIDs != tc.pods || len(deleted) > 0 || len(pending) > 0 {
		t.Errorf("pods replaced: %d UIDs seen for %d pods, deleted %v, pending %v", nUIDs, tc.pods, deleted, pending)
	}
	if d := uidsOf(after); fmt.Sprint(d) != fmt.Sprint(uidsOf(before)) {
		t.Errorf("UIDs changed:\nbefore %v\nafter  %v", uidsOf(before), d)
	}
	reported := tc.reported
	if reported == "" {
		reported = tc.to
	}
	for _, pod := range after {
		cs := containerStatus(&pod, tc.container)
		if cs == nil || cs.Image != reported || cs.RestartCount != 1 || !cs.Ready {
			t.Errorf("pod %s: want %s running, restarted once; got %s", pod.Name, reported, describePod(&pod))
		}
	}
	return ns, res
}

func TestInPlaceSeedStatefulSet(t *testing.T) {
	ns, _ := runRollout(t, rolloutCase{
		manifest: `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sample}
spec:
  replicas: 3
  serviceName: sample
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 2}
  selector: {matchLabels: {app: sample}}
  template:
    metadata: {labels: {app: sample}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - {name: main, image: "nginx:alpine"}`,
		pods: 3, bound: 2, from: "nginx:alpine", to: "nginx:latest", container: "main",
	})
	sts, err := bed.Client.AppsV1().StatefulSets(ns).Get(context.Background(), "sample", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		sts, err = bed.Client.AppsV1().StatefulSets(ns).Get(ctx, "sample", metav1.GetOptions{})
		return err == nil && sts.Status.CurrentRevision == sts.Status.UpdateRevision && sts.Status.UpdatedReplicas == 3, nil
	})
	if err != nil {
		t.Errorf("statefulset: current %s update %s updated %d: the controller does not see the Pods as updated",
			sts.Status.CurrentRevision, sts.Status.UpdateRevision, sts.Status.UpdatedReplicas)
	}
	if p := sts.Spec.UpdateStrategy.RollingUpdate.Partition; p != nil && *p != 0 {
		t.Errorf("partition %d left behind", *p)
	}
	if _, ok := sts.Annotations[inplace.RolloutAnnotation]; ok {
		t.Errorf("rollout record left on the StatefulSet")
	}
}

func TestInPlaceDeployment20Pods(t *testing.T) {
	ns, _ := runRollout(t, rolloutCase{
		manifest: `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 20
  strategy:
    rollingUpdate: {maxUnavailable: 25%}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1.27"}
      - {name: log, image: "fluentbit:3.0"}`,
		pods: 20, bound: 5, from: "fluentbit:3.0", to: "fluentbit:3.1", container: "log",
	})
	// Still one ReplicaSet: the controller rolled nothing out itself.
	time.Sleep(2 * time.Second)
	rsList, err := bed.Client.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rsList.Items) != 1 {
		t.Errorf("%d ReplicaSets, want the one that was there", len(rsList.Items))
	}
	dep, err := bed.Client.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Spec.Paused || dep.Annotations[inplace.RolloutAnnotation] != "" {
		t.Errorf("deployment left paused=%v or with the rollout record", dep.Spec.Paused)
	}
	if dep.Status.UpdatedReplicas != 20 || dep.Status.AvailableReplicas != 20 {
		t.Errorf("deployment status %+v", dep.Status)
	}
}

func TestInPlaceDaemonSet(t *testing.T) {
	ns, _ := runRollout(t, rolloutCase{
		manifest: `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy:
    rollingUpdate: {maxUnavailable: 2}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {refit.dev/node-type: kwok}
      containers:
      - {name: agent, image: "agent:1.0"}`,
		pods: 4, bound: 2, from: "agent:1.0", to: "agent:1.1", container: "agent",
	})
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ds, err := bed.Client.AppsV1().DaemonSets(ns).Get(ctx, "agent", metav1.GetOptions{})
		return err == nil && ds.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType &&
			ds.Status.UpdatedNumberScheduled == 4 && ds.Status.NumberAvailable == 4, nil
	})
	if err != nil {
		t.Errorf("daemonset: strategy not restored or Pods not counted as updated: %v", err)
	}
}

func TestInPlaceOnHollowKubelet(t *testing.T) {
	_, res := runRollout(t, rolloutCase{
		manifest: `apiVersion: apps/v1
kind: Deployment
metadata: {name: real}
spec:
  replicas: 2
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: real}}
  template:
    metadata: {labels: {app: real}}
    spec:
      nodeSelector: {kubernetes.io/hostname: hollow-node-0}
      tolerations: [{key: refit.dev/hollow, operator: Exists}]
      containers:
      - {name: app, image: "nginx:1.27"}`,
		pods: 2, bound: 1, from: "nginx:1.27", to: "nginx:1.28", container: "app",
	})
	// runRollout checks nothing of a rollout that did not succeed.
	if res.Outcome != inplace.Succeeded {
		t.Fatalf("rollout: %s: %s, want %s", res.Outcome, res.Reason, inplace.Succeeded)
	}
}

func TestInPlaceBadImageStopsAndRollsBack(t *testing.T) {
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: shop
  annotations: {refit.dev/rollback: auto, refit.dev/pre-pull: disabled}
spec:
  replicas: 8
  strategy:
    rollingUpdate: {maxUnavailable: 2}
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - {name: app, image: "shop:1.0"}`
	ns, res := runRollout(t, rolloutCase{manifest: manifest, pods: 8, bound: 2, from: "shop:1.0", to: "shop:does-not-exist", container: "app"})
	if res.Outcome != inplace.Failed || res.FailedPod == "" || !strings.Contains(res.Reason, "ErrImagePull") && !strings.Contains(res.Reason, "ImagePullBackOff") {
		t.Fatalf("result %+v, want Failed naming the pod and the pull error", res)
	}
	if res.RolledBack == 0 || res.RolledBack > 2 {
		t.Errorf("rolled back %d pods, want the first batch (1 or 2)", res.RolledBack)
	}
	// Every Pod runs the old image again, in place.
	pods := waitReadyPods(t, ns, 8, nil)
	touched := 0
	for _, pod := range pods {
		if pod.Spec.Containers[0].Image != "shop:1.0" {
			t.Errorf("pod %s left on %s", pod.Name, pod.Spec.Containers[0].Image)
		}
		if containerStatus(&pod, "app").RestartCount > 0 {
			touched++
		}
	}
	if touched > 2 {
		t.Errorf("%d pods were restarted: the rollout must stop after the first batch (2)", touched)
	}
}

// The runtime spells the image its own way ("docker.io/library/app:2"
// for "app:2") and the new tag is a retag of the same digest (the imageID
// does not change): neither may hang the rollout. OpenKruise's best-known
// bug class.
func TestInPlaceRetagAndRuntimeSpelling(t *testing.T) {
	const digest = "docker.io/library/app@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	ns, _ := runRollout(t, rolloutCase{
		manifest: `apiVersion: apps/v1
kind: Deployment
metadata: {name: retag}
spec:
  replicas: 4
  strategy: {rollingUpdate: {maxUnavailable: 2}}
  selector: {matchLabels: {app: retag}}
  template:
    metadata:
      labels: {app: retag}
      annotations:
        kwok.refit.dev/report-image-prefix: docker.io/library/
        kwok.refit.dev/image-id: docker.io/library/app@sha256:1111111111111111111111111111111111111111111111111111111111111111
    spec:
      containers:
      - {name: app, image: "app:1"}`,
		pods: 4, bound: 2, from: "app:1", to: "app:stable", container: "app", reported: "docker.io/library/app:stable",
	})
	for _, pod := range waitReadyPods(t, ns, 4, nil) {
		if id := containerStatus(&pod, "app").ImageID; id != digest {
			t.Errorf("pod %s: imageID %s, want the unchanged %s (a retag)", pod.Name, id, digest)
		}
	}
}
