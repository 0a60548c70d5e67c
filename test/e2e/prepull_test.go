//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
)

// The pre-pull tests run on kwok nodes of their own, tainted so that only
// their workload lands there, where an image costs 4 s to pull (the bed's
// per-node pull delay) and an in-place restart 1 s.
const (
	prePullDelay   = 4 * time.Second
	prePullRestart = time.Second
	prePullTaint   = "refit.dev/prepull-test"
)

// notPrePull selects every Pod but refit's pre-pull Pods: the rollout
// tests count and watch a workload's Pods, and a pre-pull Pod is none.
const notPrePull = "!" + inplace.PullRolloutLabel

// prePullNodes creates n tainted kwok nodes with a pull delay, removed when
// the test ends.
func prePullNodes(t *testing.T, prefix string, n int) []string {
	t.Helper()
	var nodes []*corev1.Node
	for i := 0; i < n; i++ {
		node := cluster.KwokNode(fmt.Sprintf("%s-%d", prefix, i), 110)
		node.Annotations["kwok.refit.dev/pull-delay"] = prePullDelay.String()
		node.Labels[prePullTaint] = prefix
		node.Spec.Taints = []corev1.Taint{{Key: prePullTaint, Value: prefix, Effect: corev1.TaintEffectNoSchedule}}
		nodes = append(nodes, node)
	}
	return addNodes(t, nodes...)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// prePullDeployment is 8 Pods on the nodes of prefix, maxUnavailable 2.
func prePullDeployment(prefix, image string, annotations ...string) string {
	ann := ""
	if len(annotations) > 0 {
		ann = "\n  annotations: {" + strings.Join(annotations, ", ") + "}"
	}
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: pp%s
spec:
  replicas: 8
  strategy:
    rollingUpdate: {maxUnavailable: 2}
  selector: {matchLabels: {app: pp}}
  template:
    metadata:
      labels: {app: pp}
      annotations: {kwok.refit.dev/restart-delay: %q}
    spec:
      nodeSelector: {%s: %s}
      tolerations: [{key: %s, operator: Exists, effect: NoSchedule}]
      # Spread hard: the scheduler's default spreading is a preference, and
      # under load it put all 8 Pods on one node (the tests count the
      # nodes that pull).
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app: pp}}}
      containers:
      - {name: app, image: %q}
`, ann, prePullRestart.String(), prePullTaint, prefix, prePullTaint, image)
}

// pullWatch follows a namespace's Pods from a watch: for the workload's
// Pods (app=pp) every stretch of time each was not Ready, their UIDs, the
// most unavailable at once and every image their specs ever had; for
// refit's pre-pull Pods, which were created, on which nodes, and whether
// they ran.
type pullWatch struct {
	w    watch.Interface
	done chan struct{}

	mu         sync.Mutex
	ready      map[string]bool
	downSince  map[string]time.Time
	longest    map[string]time.Duration
	uids       map[string]types.UID
	recreated  []string
	specImages map[string]bool
	worst      int
	pullers    map[string]string // name → node
	pullerRan  map[string]bool
	firstPatch time.Time
	pulledAt   time.Time // when the last pre-pull Pod first ran
}

func watchPulls(t *testing.T, ns string, before []corev1.Pod) *pullWatch {
	t.Helper()
	pw := &pullWatch{done: make(chan struct{}), ready: map[string]bool{}, downSince: map[string]time.Time{},
		longest: map[string]time.Duration{}, uids: map[string]types.UID{}, specImages: map[string]bool{},
		pullers: map[string]string{}, pullerRan: map[string]bool{}}
	for _, p := range before {
		pw.ready[p.Name], pw.uids[p.Name] = podReady(&p), p.UID
		pw.specImages[specOf(&p, "app")] = true
	}
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pw.w, err = bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(pw.done)
		for ev := range pw.w.ResultChan() {
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				pw.observe(ev.Type, pod, time.Now())
			}
		}
	}()
	t.Cleanup(pw.stop)
	return pw
}

func (pw *pullWatch) observe(typ watch.EventType, pod *corev1.Pod, now time.Time) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	if _, ok := pod.Labels[inplace.PullRolloutLabel]; ok {
		pw.pullers[pod.Name] = pod.Spec.NodeName
		if pod.Status.Phase == corev1.PodRunning && !pw.pullerRan[pod.Name] {
			pw.pullerRan[pod.Name] = true
			pw.pulledAt = now
		}
		return
	}
	if pod.Labels["app"] != "pp" {
		return
	}
	if uid, ok := pw.uids[pod.Name]; !ok || uid != pod.UID || typ == watch.Deleted || pod.DeletionTimestamp != nil {
		pw.recreated = append(pw.recreated, pod.Name)
	}
	image := specOf(pod, "app")
	if !pw.specImages[image] && pw.firstPatch.IsZero() {
		pw.firstPatch = now
	}
	pw.specImages[image] = true
	ready := podReady(pod) && typ != watch.Deleted
	switch {
	case pw.ready[pod.Name] && !ready:
		pw.downSince[pod.Name] = now
	case !pw.ready[pod.Name] && ready:
		if since, ok := pw.downSince[pod.Name]; ok {
			pw.longest[pod.Name] = max(pw.longest[pod.Name], now.Sub(since))
			delete(pw.downSince, pod.Name)
		}
	}
	pw.ready[pod.Name] = ready
	down := 0
	for _, r := range pw.ready {
		if !r {
			down++
		}
	}
	pw.worst = max(pw.worst, down)
}

func (pw *pullWatch) stop() {
	if pw.w != nil {
		pw.w.Stop()
		<-pw.done
		pw.w = nil
	}
}

// pullReport is what a pullWatch saw.
type pullReport struct {
	longest    map[string]time.Duration
	stillDown  []string
	recreated  []string
	specImages []string
	worst      int
	pullers    map[string]string
	ran        int
	firstPatch time.Time
	pulledAt   time.Time
}

func (pw *pullWatch) report() pullReport {
	pw.stop()
	pw.mu.Lock()
	defer pw.mu.Unlock()
	r := pullReport{longest: pw.longest, recreated: pw.recreated, worst: pw.worst, pullers: pw.pullers,
		ran: len(pw.pullerRan), firstPatch: pw.firstPatch, pulledAt: pw.pulledAt}
	for name := range pw.downSince {
		r.stillDown = append(r.stillDown, name)
	}
	for img := range pw.specImages {
		r.specImages = append(r.specImages, img)
	}
	sort.Strings(r.specImages)
	return r
}

// waitNoPullers waits until the namespace has no pre-pull Pod left.
func waitNoPullers(t *testing.T, ns string) {
	t.Helper()
	waitUntil(t, 30*time.Second, "no pre-pull Pod left", func(ctx context.Context) (bool, string) {
		list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: inplace.PullRolloutLabel})
		if err != nil {
			return false, err.Error()
		}
		var left []string
		for _, p := range list.Items {
			left = append(left, p.Name+" on "+p.Spec.NodeName+" "+string(p.Status.Phase))
		}
		return len(left) == 0, strings.Join(left, "; ")
	})
}

// TestPrePull: the nodes pull the new image before any Pod is patched, so
// each Pod is down only for its restart, not for the pull as well; a bad
// image stops the rollout with no Pod touched.
func TestPrePull(t *testing.T) {
	t.Run("WindowIsOnlyTheRestart", func(t *testing.T) {
		ns, dir := namespace(t), t.TempDir()
		prePullNodes(t, "pp-window", 2)
		writeManifests(t, dir, prePullDeployment("pp-window", "app:1"))
		mustApplyDir(t, ns, dir)
		before := waitOnImage(t, ns, "app=pp", 8, "app", "app:1", 2*time.Minute)

		pw := watchPulls(t, ns, before)
		writeManifests(t, dir, prePullDeployment("pp-window", "app:2"))
		start := time.Now()
		out := mustApplyDir(t, ns, dir, "--grace", "0s")
		after := waitOnImage(t, ns, "app=pp", 8, "app", "app:2", time.Minute)
		waitNoPullers(t, ns)
		r := pw.report()
		t.Logf("rollout of 8 Pods in %s; pull %s, restart %s; longest down per Pod %v; most down at once %d; pre-pull Pods %v",
			time.Since(start).Round(100*time.Millisecond), prePullDelay, prePullRestart, r.longest, r.worst, r.pullers)

		sameUIDs(t, before, after)
		if len(r.recreated) > 0 || len(r.stillDown) > 0 {
			t.Errorf("pods recreated %v or still down %v; want every Pod updated in place and Ready", r.recreated, r.stillDown)
		}
		if r.worst > 2 {
			t.Errorf("%d pods unavailable at once, bound 2", r.worst)
		}
		if len(r.longest) != 8 {
			t.Errorf("%d pods seen going down and up again, want 8: %v", len(r.longest), r.longest)
		}
		// Without pre-pull the first Pod restarted on each node waits for
		// the pull: pull + restart, 5 s.
		limit := prePullRestart + 2*time.Second
		for name, d := range r.longest {
			if d > limit {
				t.Errorf("pod %s down for %s, want about the restart (%s), at most %s: not pull + restart", name, d.Round(100*time.Millisecond), prePullRestart, limit)
			}
		}
		if len(r.pullers) != 2 || r.ran != 2 {
			t.Errorf("pre-pull Pods %v (%d ran), want one per node that ran", r.pullers, r.ran)
		}
		if r.firstPatch.Before(r.pulledAt) {
			t.Errorf("first Pod patched at %s, before the pulls ended at %s", r.firstPatch.Format("15:04:05.000"), r.pulledAt.Format("15:04:05.000"))
		}
		for _, want := range []string{"pulling app:2 on 2 nodes", "pulled on 2 nodes in"} {
			if !strings.Contains(out, want) {
				t.Errorf("refit apply output lacks %q:\n%s", want, out)
			}
		}
	})

	// refit killed while the nodes pull leaves its pre-pull Pods behind; the
	// next apply (here of newer images) removes them and finishes in place.
	t.Run("KilledWhilePullingLeavesNothing", func(t *testing.T) {
		ns, dir := namespace(t), t.TempDir()
		prePullNodes(t, "pp-kill", 2)
		writeManifests(t, dir, prePullDeployment("pp-kill", "app:1"))
		mustApplyDir(t, ns, dir)
		before := waitOnImage(t, ns, "app=pp", 8, "app", "app:1", 2*time.Minute)

		writeManifests(t, dir, prePullDeployment("pp-kill", "app:2"))
		p := startApply(t, ns, dir, "--grace", "0s")
		var left []string
		waitUntil(t, 30*time.Second, "pre-pull Pods on both nodes", func(ctx context.Context) (bool, string) {
			list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: inplace.PullRolloutLabel})
			if err != nil {
				return false, err.Error()
			}
			left = nil
			for _, pod := range list.Items {
				left = append(left, pod.Name)
			}
			return len(left) == 2, fmt.Sprintf("%v", left)
		})
		if !p.kill() {
			t.Fatalf("refit apply ended before it was killed:\n%s", p.out.String())
		}
		pods := livePods(context.Background(), t, ns, "app=pp")
		for i := range pods {
			if specOf(&pods[i], "app") != "app:1" {
				t.Fatalf("pod %s patched while its node pulled: %s", pods[i].Name, describePod(&pods[i]))
			}
		}

		writeManifests(t, dir, prePullDeployment("pp-kill", "app:3"))
		out := mustApplyDir(t, ns, dir, "--grace", "0s")
		after := waitOnImage(t, ns, "app=pp", 8, "app", "app:3", time.Minute)
		sameUIDs(t, before, after)
		waitNoPullers(t, ns)
		if !strings.Contains(out, "pulling app:3 on 2 nodes") {
			t.Errorf("refit apply output lacks the pull of app:3:\n%s", out)
		}
	})

	t.Run("BadImageTouchesNoPod", func(t *testing.T) {
		ns, dir := namespace(t), t.TempDir()
		prePullNodes(t, "pp-bad", 2)
		rollback := `refit.dev/rollback: auto`
		writeManifests(t, dir, prePullDeployment("pp-bad", "app:1", rollback))
		mustApplyDir(t, ns, dir)
		before := waitOnImage(t, ns, "app=pp", 8, "app", "app:1", 2*time.Minute)

		pw := watchPulls(t, ns, before)
		writeManifests(t, dir, prePullDeployment("pp-bad", "app:bad", rollback))
		out, code := applyDir(t, ns, dir, "--grace", "0s")
		waitNoPullers(t, ns)
		consistentlyTrue(t, 3*time.Second, "every Pod still on app:1 and Ready", func(ctx context.Context) (bool, string) {
			pods := livePods(ctx, t, ns, "app=pp")
			for i := range pods {
				if specOf(&pods[i], "app") != "app:1" || !podReady(&pods[i]) {
					return false, describePod(&pods[i])
				}
			}
			return len(pods) == 8, fmt.Sprintf("%d pods", len(pods))
		})
		r := pw.report()
		t.Logf("refit apply exit %d; pre-pull Pods %v; output:\n%s", code, r.pullers, out)

		if code == 0 || !strings.Contains(out, "FAILED") || !strings.Contains(out, "app:bad") || !strings.Contains(out, "pp-bad-") {
			t.Errorf("refit apply: exit %d; want a failed rollout naming the image and the node", code)
		}
		if len(r.specImages) != 1 || r.specImages[0] != "app:1" {
			t.Errorf("pod specs seen with images %v, want only app:1: a Pod was patched", r.specImages)
		}
		if r.worst != 0 || len(r.longest) > 0 || len(r.recreated) > 0 {
			t.Errorf("pods down %v (most at once %d), recreated %v: want none touched", r.longest, r.worst, r.recreated)
		}
		if len(r.pullers) == 0 {
			t.Errorf("no pre-pull Pod seen: the test proves nothing")
		}
		// With rollback, nothing was patched: the template is back on app:1.
		waitReleased(t, ns, "Deployment", "pp", "app", "app:1", 8)
	})
}
