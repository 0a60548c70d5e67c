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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
)

// quietWatch follows a namespace's Pods from a watch: every UID, the most
// Pods not Ready at once, and each Pod's highest restart count per
// container, so a test proves from events that nothing restarted, not
// from a final snapshot.
type quietWatch struct {
	w    watch.Interface
	done chan struct{}

	mu             sync.Mutex
	uids           map[types.UID]string
	notReady       map[types.UID]bool
	maxUnavailable int
	restarts       map[string]int32 // "pod/container" → highest restartCount seen
	deleted        []string
}

func watchQuiet(t *testing.T, ns string) *quietWatch {
	t.Helper()
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatal(err)
	}
	qw := &quietWatch{done: make(chan struct{}), uids: map[types.UID]string{}, notReady: map[types.UID]bool{}, restarts: map[string]int32{}}
	for i := range list.Items {
		qw.observe(watch.Added, &list.Items[i])
	}
	qw.w, err = bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: notPrePull, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(qw.done)
		for ev := range qw.w.ResultChan() {
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				qw.observe(ev.Type, pod)
			}
		}
	}()
	t.Cleanup(qw.stop)
	return qw
}

func (qw *quietWatch) observe(typ watch.EventType, pod *corev1.Pod) {
	qw.mu.Lock()
	defer qw.mu.Unlock()
	qw.uids[pod.UID] = pod.Name
	if typ == watch.Deleted || pod.DeletionTimestamp != nil {
		qw.deleted = append(qw.deleted, pod.Name)
	}
	qw.notReady[pod.UID] = typ != watch.Deleted && !podReady(pod)
	n := 0
	for _, down := range qw.notReady {
		if down {
			n++
		}
	}
	qw.maxUnavailable = max(qw.maxUnavailable, n)
	for _, cs := range pod.Status.ContainerStatuses {
		key := pod.Name + "/" + cs.Name
		qw.restarts[key] = max(qw.restarts[key], cs.RestartCount)
	}
}

func (qw *quietWatch) stop() {
	if qw.w != nil {
		qw.w.Stop()
		<-qw.done
		qw.w = nil
	}
}

type quietReport struct {
	uids           int
	maxUnavailable int
	restarts       map[string]int32
	deleted        []string
}

func (qw *quietWatch) report() quietReport {
	qw.stop()
	qw.mu.Lock()
	defer qw.mu.Unlock()
	return quietReport{uids: len(qw.uids), maxUnavailable: qw.maxUnavailable, restarts: qw.restarts, deleted: qw.deleted}
}

// restarted lists the containers the watch saw restart at least once.
func (r quietReport) restarted() []string {
	var out []string
	for k, n := range r.restarts {
		if n > 0 {
			out = append(out, fmt.Sprintf("%s (%d)", k, n))
		}
	}
	slices.Sort(out)
	return out
}

// describeResize is what a Pod says about its resources and resize.
func describeResize(pod *corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "generation %d observed %d;", pod.Generation, pod.Status.ObservedGeneration)
	for _, c := range pod.Spec.Containers {
		fmt.Fprintf(&b, " spec %s %v;", c.Name, c.Resources.Requests)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		fmt.Fprintf(&b, " status %s resources %v allocated %v restarts %d ready %v;", cs.Name, cs.Resources, cs.AllocatedResources, cs.RestartCount, cs.Ready)
	}
	for _, c := range pod.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s %s %s;", c.Type, c.Status, c.Reason, c.Message)
	}
	fmt.Fprintf(&b, " state %s", pod.Annotations[inplace.StateAnnotation])
	return b.String()
}

// rollInPlace applies before, waits for n ready Pods, plans after and
// checks the plan's class and aspects, then rolls it out with the engine
// while a quietWatch follows the Pods.
func rollInPlace(t *testing.T, ns, before, after string, n int, wantAspects ...diff.Aspect) (inplace.Result, quietReport, []corev1.Pod) {
	t.Helper()
	base := parseObjects(t, before)
	applyForTest(t, ns, base)
	pods := waitReadyPods(t, ns, n, &base[0])
	next := parseObjects(t, after)
	change := plan(t, ns, next).Changes[0]
	if change.Class != diff.PodMutable || change.Path != diff.PathInPlace || fmt.Sprint(change.InPlace) != fmt.Sprint(wantAspects) {
		t.Fatalf("plan: %s %s %s in place %v (fields %v, reason %q), want PodMutable InPlace %v", change.Action, change.Class, change.Path,
			change.InPlace, change.Fields, change.Reason, wantAspects)
	}
	qw := watchQuiet(t, ns)
	opts := inplace.DefaultOptions()
	opts.Grace = 0
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	res, err := newEngine(t).Rollout(ctx, change, opts)
	if err != nil {
		for _, pod := range podsOf(t, ns) {
			t.Logf("pod %s: %s", pod.Name, describeResize(&pod))
		}
		t.Fatalf("rollout: %v", err)
	}
	t.Logf("%s: %s, %d of %d Pods in %s, %d requests", change.Ref, res.Outcome, res.Updated, res.Total, res.Duration.Round(time.Millisecond), res.Requests)
	return res, qw.report(), pods
}

// TestInPlaceTemplateMetadata: a template annotation changed, one added,
// one removed and a label added reach the running Pods: same UIDs, no
// container restarted, no Pod ever unready (the bound is not even used),
// and the ReplicaSet's template is the Deployment's (no new ReplicaSet).
func TestInPlaceTemplateMetadata(t *testing.T) {
	ns := namespace(t)
	const manifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: meta}
spec:
  replicas: 4
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: meta}}
  template:
    metadata:
      labels: {app: meta}
      annotations: {team: shop, owner: alice, drop-me: "yes"}
    spec:
      containers:
      - {name: app, image: "nginx:1.27"}`
	after := strings.NewReplacer(`labels: {app: meta}`, `labels: {app: meta, tier: front}`,
		`annotations: {team: shop, owner: alice, drop-me: "yes"}`, `annotations: {team: shop, owner: bob, added: "1"}`).Replace(manifest)
	res, rep, before := rollInPlace(t, ns, manifest, after, 4, diff.AspectMetadata)
	if res.Outcome != inplace.Succeeded || res.Updated != 4 {
		t.Fatalf("rollout: %s (%s), %d of %d updated; want Succeeded, 4", res.Outcome, res.Reason, res.Updated, res.Total)
	}
	if rep.uids != 4 || len(rep.deleted) > 0 || len(rep.restarted()) > 0 || rep.maxUnavailable > 0 {
		t.Errorf("watch: %d UIDs (want 4), deleted %v, restarted %v, most unready at once %d (want 0)", rep.uids, rep.deleted, rep.restarted(), rep.maxUnavailable)
	}
	now := podsOf(t, ns)
	sameUIDs(t, before, now)
	for _, pod := range now {
		if pod.Labels["tier"] != "front" || pod.Annotations["owner"] != "bob" || pod.Annotations["added"] != "1" || pod.Annotations["team"] != "shop" {
			t.Errorf("pod %s: labels %v annotations %v; want tier=front, owner=bob, added=1, team=shop", pod.Name, pod.Labels, pod.Annotations)
		}
		if _, ok := pod.Annotations["drop-me"]; ok {
			t.Errorf("pod %s still has the annotation the template dropped", pod.Name)
		}
	}
	rsList, err := bed.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rsList.Items) != 1 || rsList.Items[0].Spec.Template.Annotations["owner"] != "bob" || rsList.Items[0].Spec.Template.Labels["tier"] != "front" {
		t.Errorf("ReplicaSets: %d; want one whose template carries the new metadata", len(rsList.Items))
	}
}
