//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/inplace"
)

// The surge tests: a workload that lets no Pod go down (maxUnavailable 0)
// but allows extra Pods (maxSurge) is updated in place with refit's extra
// Pods standing in: the original Pods keep their UIDs and end on the new
// images, there are never fewer available Pods than replicas (from a
// watch), the workload controller neither adopts nor replaces anything, and
// no extra Pod is left at the end.

// A Deployment of 3 replicas with the default strategy: maxUnavailable 25%
// rounds down to 0, maxSurge 25% rounds up to 1. The PDB lets no Pod go
// down: it is kept by the extra Pod being counted healthy, and its expected
// count stays 3 (the disruption controller finds the Deployment's scale
// for the extra Pod, as for the others).
const surgeDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {kwok.refit.dev/restart-delay: "1s"}
    spec:
      containers:
      - {name: app, image: "app:VERSION"}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web}
spec:
  maxUnavailable: 0
  selector: {matchLabels: {app: web}}
`

func TestSurgeDeployment(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string { return strings.ReplaceAll(surgeDeployment, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=web", 3, "app", "app:1", time.Minute)
	waitPDB(t, ns, "web", 3)

	bw := watchBound(t, ns, groupOf(t, "deployment web (fewer than 3 available)", "app=web", 3, 0))
	pdbs := watchPDB(t, ns, "web")
	writeManifests(t, dir, manifest("2"))
	assertPlanLine(t, ns, dir, "Deployment.apps/"+ns+"/web", "update in place", "Pods recreated")
	start := time.Now()
	out := mustApplyDir(t, ns, dir, "--grace", "0s")
	t.Logf("refit apply took %s:\n%s", time.Since(start).Round(100*time.Millisecond), out)
	assertNoExtraLeft(t, ns)
	after := waitOnImage(t, ns, "app=web", 3, "app", "app:2", time.Minute)

	r := bw.report()
	r.assertBounds(t)
	sameUIDs(t, before, after)
	assertSurged(t, r, before, ns)
	if len(r.patched) != 3 {
		t.Errorf("pods patched in place %v, want the 3 originals\n%s", r.patched, out)
	}
	expected, failed := pdbs.stop()
	if expected != 3 || failed != "" {
		t.Errorf("PDB: most expected Pods %d (want 3: the extra Pod is not counted against the Deployment's scale); sync failure %q", expected, failed)
	}
	rs, err := bed.Client.AppsV1().ReplicaSets(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(rs.Items) != 1 || rs.Items[0].Status.Replicas != 3 {
		t.Errorf("ReplicaSets %v, %v: want one, with 3 Pods", rs, err)
	}
	noRecordLeft(t, ns, "Deployment", "web")
}

// A DaemonSet with maxUnavailable 0 and maxSurge 1: an extra Pod on the
// node of the Pod being patched, one node at a time; counted per node as
// the DaemonSet controller counts it.
const surgeAgent = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  template:
    metadata:
      labels: {app: agent}
      annotations: {kwok.refit.dev/restart-delay: "1s"}
    spec:
      nodeSelector: {refit.dev/node-type: kwok}
      containers:
      - {name: agent, image: "agent:VERSION"}
`

func TestSurgeDaemonSet(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	n := kwokNodes(t)
	manifest := func(v string) string { return strings.ReplaceAll(surgeAgent, "VERSION", v) }
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=agent", n, "agent", "agent:1", time.Minute)

	g := groupOf(t, "daemonset agent (nodes without an available Pod)", "app=agent", n, 0)
	g.perNode = true
	bw := watchBound(t, ns, g)
	writeManifests(t, dir, manifest("2"))
	assertPlanLine(t, ns, dir, "DaemonSet.apps/"+ns+"/agent", "update in place", "Pods recreated")
	start := time.Now()
	out := mustApplyDir(t, ns, dir, "--grace", "0s")
	t.Logf("refit apply took %s:\n%s", time.Since(start).Round(100*time.Millisecond), out)
	assertNoExtraLeft(t, ns)
	after := waitOnImage(t, ns, "app=agent", n, "agent", "agent:2", time.Minute)

	r := bw.report()
	r.assertBounds(t)
	sameUIDs(t, before, after)
	assertSurged(t, r, before, ns)
	if len(r.patched) != n {
		t.Errorf("pods patched in place %v, want the %d originals\n%s", r.patched, n, out)
	}
	ds, err := bed.Client.AppsV1().DaemonSets(ns).Get(context.Background(), "agent", metav1.GetOptions{})
	if err != nil || ds.Status.UpdatedNumberScheduled != int32(n) || ds.Spec.UpdateStrategy.Type != "RollingUpdate" {
		t.Errorf("DaemonSet: %v; want %d Pods updated and Git's strategy back", err, n)
	}
	noRecordLeft(t, ns, "DaemonSet", "agent")
}

// A Deployment that lets no Pod go down and allows no extra Pod (25% of 3
// rounds down to 0, maxSurge 0) goes the ordinary way, and the plan says
// why.
func TestSurgeZeroFallsBack(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string {
		return strings.ReplaceAll(strings.Replace(surgeDeployment, "  replicas: 3\n",
			"  replicas: 3\n  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 25%, maxSurge: 0}}\n", 1), "VERSION", v)
	}
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	waitOnImage(t, ns, "app=web", 3, "app", "app:1", time.Minute)
	writeManifests(t, dir, manifest("2"))
	assertPlanLine(t, ns, dir, "Deployment.apps/"+ns+"/web", "maxUnavailable is 0 and maxSurge is 0", "update in place")
}

// assertSurged checks that extra Pods were what kept the bound: every Pod
// created while watched is refit's extra Pod (and was deleted), none was
// adopted by the workload's controller, and no original was deleted.
func assertSurged(t *testing.T, r boundReport, before []corev1.Pod, ns string) {
	t.Helper()
	if len(r.created) == 0 {
		t.Errorf("no extra Pod was created: the bound was not kept by a surge")
	}
	originals := map[string]bool{}
	for _, p := range before {
		originals[p.Name] = true
	}
	for _, name := range r.created {
		if !strings.Contains(name, "-surge-") {
			t.Errorf("pod %s created: want only refit's extra Pods", name)
		}
	}
	for _, name := range r.deleted {
		if originals[name] {
			t.Errorf("original pod %s deleted", name)
		}
	}
	if len(r.deleted) != len(r.created) {
		t.Errorf("created %v, deleted %v: want every extra Pod deleted", r.created, r.deleted)
	}
}

// assertNoExtraLeft fails if any extra Pod (also one being deleted) is left.
func assertNoExtraLeft(t *testing.T, ns string) {
	t.Helper()
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: inplace.SurgeLabel})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) > 0 {
		var names []string
		for _, p := range list.Items {
			names = append(names, p.Name)
		}
		t.Errorf("extra Pods left after the rollout: %v", names)
	}
}

// pdbWatch polls a PDB's status while a rollout runs: the most Pods the
// disruption controller expected, and any sync failure it reported.
type pdbWatch struct {
	cancel   context.CancelFunc
	done     chan struct{}
	mu       sync.Mutex
	expected int32
	failed   string
}

func watchPDB(t *testing.T, ns, name string) *pdbWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &pdbWatch{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			pdb, err := bed.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
			if err == nil {
				w.mu.Lock()
				w.expected = max(w.expected, pdb.Status.ExpectedPods)
				for _, c := range pdb.Status.Conditions {
					if c.Type == policyv1.DisruptionAllowedCondition && c.Reason == policyv1.SyncFailedReason {
						w.failed = fmt.Sprintf("%s: %s", c.Reason, c.Message)
					}
				}
				w.mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

func (w *pdbWatch) stop() (int32, string) {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.expected, w.failed
}

// A Deployment (maxUnavailable 0, maxSurge 1) whose extra Pod cannot be
// placed (anti-affinity: one Pod per node, and as many replicas as nodes) goes the ordinary way with nothing
// changed: the rollout says why, no extra Pod is left, and the next plan
// sends the change the ordinary way with the reason.
const crowdedDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {refit.dev/surge-deadline: 2s}
spec:
  replicas: REPLICAS
  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      nodeSelector: {refit.dev/node-type: kwok}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: web}}, topologyKey: kubernetes.io/hostname}
      containers:
      - {name: app, image: "app:VERSION"}
`

func TestSurgeNoRoomFallsBack(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	n := kwokNodes(t)
	manifest := func(v string) string {
		return strings.NewReplacer("VERSION", v, "REPLICAS", fmt.Sprint(n)).Replace(crowdedDeployment)
	}
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=web", n, "app", "app:1", time.Minute)

	bw := watchBound(t, ns, groupOf(t, "deployment web", "app=web", n, 0))
	writeManifests(t, dir, manifest("2"))
	out, code := applyDir(t, ns, dir, "--grace", "0s")
	if code == 0 || !strings.Contains(out, "no room for an extra Pod") {
		t.Errorf("refit apply: exit %d; want a fallback saying there is no room for an extra Pod\n%s", code, out)
	}
	assertNoExtraLeft(t, ns)
	r := bw.report()
	if len(r.patched) > 0 || len(r.downed) > 0 {
		t.Errorf("pods patched %v, taken down %v: want nothing changed", r.patched, r.downed)
	}
	sameUIDs(t, before, livePods(context.Background(), t, ns, "app=web"))
	d, err := bed.Client.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil || d.Spec.Template.Spec.Containers[0].Image != "app:1" || d.Spec.Paused {
		t.Errorf("deployment: %v; want its template untouched (app:1), not paused", err)
	}
	assertPlanLine(t, ns, dir, "Deployment.apps/"+ns+"/web", "no room for an extra Pod", "update in place")
}

// refit killed (SIGKILL) during a surge rollout, with an extra Pod up and
// an original patched: the extra Pod outlives it, and refit apply run again
// finds it, finishes the rollout in place with the bound kept across the
// kill (from the watch), and leaves no extra Pod behind.
func TestSurgeKilledResumes(t *testing.T) {
	ns, dir := namespace(t), t.TempDir()
	manifest := func(v string) string {
		return strings.ReplaceAll(strings.ReplaceAll(surgeDeployment, `restart-delay: "1s"`, `restart-delay: "3s"`), "VERSION", v)
	}
	writeManifests(t, dir, manifest("1"))
	mustApplyDir(t, ns, dir)
	before := waitOnImage(t, ns, "app=web", 3, "app", "app:1", time.Minute)
	waitPDB(t, ns, "web", 3)

	bw := watchBound(t, ns, groupOf(t, "deployment web (fewer than 3 available)", "app=web", 3, 0))
	writeManifests(t, dir, manifest("2"))
	p := startApply(t, ns, dir, "--grace", "0s")
	waitUntil(t, time.Minute, "an extra Pod and an original patched", func(ctx context.Context) (bool, string) {
		extras, patched := 0, 0
		for _, pod := range livePods(ctx, t, ns, "app=web") {
			if _, ok := pod.Labels[inplace.SurgeLabel]; ok {
				extras++
			} else if _, ok := pod.Annotations[inplace.StateAnnotation]; ok {
				patched++
			}
		}
		return extras > 0 && patched > 0, fmt.Sprintf("%d extra, %d patched", extras, patched)
	})
	if !p.kill() {
		t.Fatalf("refit apply ended before the kill: the test proves nothing\n%s", p.out.String())
	}
	if n := len(livePods(context.Background(), t, ns, inplace.SurgeLabel)); n == 0 {
		t.Fatalf("no extra Pod outlived the kill: the test proves nothing")
	}
	again := mustApplyDir(t, ns, dir, "--grace", "0s")
	if !strings.Contains(again, "continuing an unfinished in-place rollout") {
		t.Errorf("second apply did not continue the rollout:\n%s", again)
	}
	assertNoExtraLeft(t, ns)
	after := waitOnImage(t, ns, "app=web", 3, "app", "app:2", time.Minute)
	r := bw.report()
	r.assertBounds(t)
	sameUIDs(t, before, after)
	assertSurged(t, r, before, ns)
	noRecordLeft(t, ns, "Deployment", "web")
}
