//go:build e2e

package e2e

// Issue 10, the reconciler's side: a structural commit during a rollout
// releases every hold (case 1), a failed rollout is a bad commit that polls
// and drift passes do not retry (case 4), in-place rollouts start right
// after the writes and not after unrelated health (case 12), and refit run
// keeps the readiness gate of gated workloads from a watch (case 7).

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/inplace"
)

// holdLeft says which hold of an in-place rollout the live workload still
// carries ("" for none): the rollout record, a Deployment's pause, a
// StatefulSet's partition other than Git's (none: 0), a DaemonSet's
// strategy other than Git's RollingUpdate.
func holdLeft(ctx context.Context, ns, kind, name string) (string, error) {
	var ann map[string]string
	var held []string
	switch kind {
	case "Deployment":
		d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		ann = d.Annotations
		if d.Spec.Paused {
			held = append(held, "paused")
		}
	case "StatefulSet":
		s, err := bed.Client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		ann = s.Annotations
		if ru := s.Spec.UpdateStrategy.RollingUpdate; s.Spec.UpdateStrategy.Type != "RollingUpdate" || ru != nil && ru.Partition != nil && *ru.Partition != 0 {
			held = append(held, fmt.Sprintf("updateStrategy %+v", s.Spec.UpdateStrategy))
		}
	case "DaemonSet":
		d, err := bed.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		ann = d.Annotations
		if d.Spec.UpdateStrategy.Type != "RollingUpdate" {
			held = append(held, "updateStrategy "+string(d.Spec.UpdateStrategy.Type))
		}
	}
	if rec, ok := ann[inplace.RolloutAnnotation]; ok {
		held = append(held, "record "+rec)
	}
	return strings.Join(held, ", "), nil
}

// Case 1: a structural commit while an in-place rollout is held (its refit
// was killed) ends the rollout on purpose: the plan says so, and the apply
// that writes it leaves no hold behind, so the controller replaces the
// Pods under its own strategy.
func TestReconcileStructuralCommitReleasesTheHold(t *testing.T) {
	for _, kind := range []string{"Deployment", "StatefulSet", "DaemonSet"} {
		t.Run(kind, func(t *testing.T) {
			ns := namespace(t)
			n := 6
			w := workload{kind: kind, name: "app", replicas: n, maxUnavailable: "1", restartDelay: "4s", image: "app:1"}
			if kind == "DaemonSet" {
				w.replicas, n = 0, kwokNodes(t)
			}
			v2 := w.with(func(w *workload) { w.image = "app:2" })
			v3 := v2.with(func(w *workload) { w.env = "fast" })
			dir := t.TempDir()
			writeManifests(t, dir, w.yaml())
			applyCLI(t, ns, dir, 0, "--wait")
			waitSettled(t, ns, n, "app", "app:1", 2*time.Minute)

			writeManifests(t, dir, v2.yaml())
			first := startCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--grace", "0s")
			waitPatched(t, ns, "app", "app:2", 1, time.Minute)
			first.kill()
			held, err := holdLeft(context.Background(), ns, kind, "app")
			if err != nil || !strings.Contains(held, "record") {
				t.Fatalf("the rollout is not held after the kill (%q, %v): the test proves nothing\n%s", held, err, first.out.String())
			}
			t.Logf("held after the kill: %s", held)

			writeManifests(t, dir, v3.yaml())
			plan, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns)
			line := grepLines(plan, "~ "+kind+".apps/"+ns+"/app")
			if code != 2 || !strings.Contains(line, "Pods recreated (structural change: the in-place rollout under way ends and the controller replaces the Pods under its own strategy)") {
				t.Errorf("plan: exit %d, want the structural change to end the rollout; line %q\n%s", code, line, plan)
			}
			out, _ := applyCLI(t, ns, dir, 0, "--grace", "0s")
			// Right after the write, before the controller acts: nothing of
			// the hold is left, because refit's field manager owns it.
			if held, err := holdLeft(context.Background(), ns, kind, "app"); err != nil || held != "" {
				t.Errorf("after the structural apply: hold left %q (%v)\n%s", held, err, out)
			}
			waitFor(t, time.Minute, "the controller replacing Pods with the new template", func(ctx context.Context) bool {
				return countPodsWhere(ctx, ns, func(p *corev1.Pod) bool { return len(p.Spec.Containers[0].Env) == 1 }) > 0
			})
		})
	}
}

// reconciles reads refit_reconciles_total of app by result from refit
// run's metrics.
func reconciles(t *testing.T, svc *service, app, result string) int {
	t.Helper()
	line := grepLines(svc.metrics(t), appSeries("refit_reconciles_total", app, result))
	if line == "" {
		return 0
	}
	fields := strings.Fields(line)
	n, err := strconv.ParseFloat(fields[len(fields)-1], 64)
	if err != nil {
		t.Fatalf("metric line %q: %v", line, err)
	}
	return int(n)
}

// Case 4, the reconciler's side: a failed in-place rollout (with and
// without rollback) is a bad commit. refit run reports it and does not
// touch the workload again, however many polls and drift passes go by,
// until a new commit arrives; a good image then rolls out in place.
func TestReconcileFailedRolloutIsNotRetried(t *testing.T) {
	for _, rollback := range []bool{false, true} {
		t.Run(map[bool]string{false: "Stopped", true: "RolledBack"}[rollback], func(t *testing.T) {
			ns := namespace(t)
			w := workload{kind: "Deployment", name: "web", replicas: 4, maxUnavailable: "1", restartDelay: "2s", image: "app:1",
				annotations: map[string]string{inplace.PrePullAnnotation: "disabled"}}
			if rollback {
				w.annotations[inplace.RollbackAnnotation] = "auto"
			}
			app := newGitApp(t, ns, "failing")
			app.commit(w.yaml(), "v1")
			svc := app.serve(t, "--grace", "0s", "--drift-interval", "3s")
			before := waitSettled(t, ns, 4, "app", "app:1", 2*time.Minute)
			fw := watchFleet(t, ns)

			app.commit(w.with(func(w *workload) { w.image = "app:bad" }).yaml(), "v2: a bad image")
			waitFor(t, 2*time.Minute, "the rollout of the bad image reported failed", func(context.Context) bool {
				return reconciles(t, svc, "failing", "rollout-failed") >= 1
			})
			onBad := func(ctx context.Context) int {
				return countPodsWhere(ctx, ns, func(p *corev1.Pod) bool { return specImageOf(p, "app") == "app:bad" })
			}
			// Drift passes of v1 came before: count from the failure on.
			counts := map[string]int{}
			for _, result := range []string{"rollout-failed", "success", "failure", "transient-error"} {
				counts[result] = reconciles(t, svc, "failing", result)
			}
			patched := onBad(context.Background())
			if rollback && patched != 0 || !rollback && patched != 1 {
				t.Errorf("after the failed rollout: %d pods on the bad image, want %d", patched, map[bool]int{false: 1, true: 0}[rollback])
			}
			// Polls every second, a drift pass due every 3 s: four drift
			// intervals go by without a new commit.
			consistentlyTrue(t, 12*time.Second, "the failed commit not retried", func(ctx context.Context) (bool, string) {
				if n := onBad(ctx); n != patched {
					return false, fmt.Sprintf("%d pods on the bad image, %d when it failed", n, patched)
				}
				for result, want := range counts {
					if got := reconciles(t, svc, "failing", result); got != want {
						return false, fmt.Sprintf("%d reconciliations with result %s, %d when it failed", got, result, want)
					}
				}
				return true, ""
			})
			if rollback {
				// The workload itself remembers the rolled-back images: a
				// restarted refit run (or a new leader) does not try them
				// again either; it reports the commit failed at once.
				svc.kill()
				svc = app.serve(t, "--grace", "0s", "--drift-interval", "3s")
				waitFor(t, time.Minute, "the restarted service reported the commit failed", func(context.Context) bool {
					return reconciles(t, svc, "failing", "rollout-failed") >= 1
				})
				consistentlyTrue(t, 6*time.Second, "the rolled-back commit not retried after a restart", func(ctx context.Context) (bool, string) {
					n := onBad(ctx)
					return n == 0, fmt.Sprintf("%d pods on the bad image", n)
				})
			}

			app.commit(w.with(func(w *workload) { w.image = "app:2" }).yaml(), "v3: a good image")
			after := waitSettled(t, ns, 4, "app", "app:2", 2*time.Minute)
			assertFleet(t, fw, fleetCheck{bound: 1, before: before, after: after})
			waitFor(t, 30*time.Second, "the good commit reported a success", func(context.Context) bool {
				return reconciles(t, svc, "failing", "success") > counts["success"]
			})
		})
	}
}

// Case 12: an in-place rollout starts right after the apply's writes, not
// after the health of unrelated objects: here a Deployment of the same
// commit that never becomes healthy (its image does not exist) holds the
// health wait to its timeout, while the image bump of another Deployment
// rolls out in place meanwhile.
func TestReconcileRolloutStartsRightAfterTheWrites(t *testing.T) {
	ns, other := namespace(t), namespace(t)
	web := workload{kind: "Deployment", name: "web", replicas: 6, maxUnavailable: "2", restartDelay: "2s", image: "app:1"}
	stuck := fmt.Sprintf(`---
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      containers: [{name: app, image: "does-not-exist:1"}]
`, other)
	dir := t.TempDir()
	writeManifests(t, dir, web.yaml())
	applyCLI(t, ns, dir, 0, "--wait")
	before := waitSettled(t, ns, 6, "app", "app:1", 2*time.Minute)
	fw := watchFleet(t, ns)

	const healthTimeout = 30 * time.Second
	writeManifests(t, dir, web.with(func(w *workload) { w.image = "app:2" }).yaml()+stuck)
	start := time.Now()
	cmd := startCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--wait", "--grace", "0s", "--health-timeout", healthTimeout.String())
	waitPatched(t, ns, "app", "app:2", 1, healthTimeout)
	first := time.Since(start)
	after := waitSettled(t, ns, 6, "app", "app:2", healthTimeout)
	done := time.Since(start)
	code := cmd.exitWithin(t, 2*healthTimeout)
	took := time.Since(start)
	t.Logf("first pod patched %s after refit apply started, rollout done at %s, refit apply exited %d at %s (health timeout %s)",
		first.Round(100*time.Millisecond), done.Round(100*time.Millisecond), code, took.Round(100*time.Millisecond), healthTimeout)
	if first > 10*time.Second {
		t.Errorf("first pod patched %s after the start: the rollout waited for unrelated health", first.Round(100*time.Millisecond))
	}
	if done >= healthTimeout {
		t.Errorf("rollout done %s after the start, not before the health timeout of %s", done.Round(100*time.Millisecond), healthTimeout)
	}
	out := cmd.out.String()
	if code != 1 || !strings.Contains(out, "Deployment.apps/"+other+"/stuck") || !strings.Contains(out, "in place: done") {
		t.Errorf("refit apply: exit %d, want 1 with the stuck Deployment named unhealthy and the rollout done\n%s", code, out)
	}
	assertFleet(t, fw, fleetCheck{bound: 2, before: before, after: after})
	assertRestartedOnce(t, before, after, "app", "app:2")
}

// Case 7: refit run keeps the readiness gate of its gated workloads from a
// watch, with no rollout running: Pods of a scale-up by hand become Ready
// within seconds, so does the Pod that replaces an evicted one, and a Pod
// whose gate was left False (as a refit killed mid-rollout leaves it) gets
// it True again.
func TestReconcileGateKeeper(t *testing.T) {
	ns := namespace(t)
	w := workload{kind: "Deployment", name: "web", replicas: 3, maxUnavailable: "1", image: "app:1", gate: true}
	app := newGitApp(t, ns, "gated")
	app.commit(w.yaml(), "v1")
	svc := app.serve(t, "--grace", "0s", "--drift-interval", "1h")
	waitSettled(t, ns, 3, "app", "app:1", 2*time.Minute)
	waitFor(t, time.Minute, "the first deploy reconciled", func(context.Context) bool {
		return reconciles(t, svc, "gated", "success") >= 1
	})
	const within = 10 * time.Second
	ctx := context.Background()

	start := time.Now()
	scale := []byte(`{"spec":{"replicas":6}}`)
	if _, err := bed.Client.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, scale, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := waitSettled(t, ns, 6, "app", "app:1", within)
	t.Logf("scale 3 → 6 by hand: every pod Ready with the gate True %s after the scale", time.Since(start).Round(100*time.Millisecond))

	victim := pods[0].Name
	start = time.Now()
	setCondition(t, ns, victim, inplace.GateCondition, corev1.ConditionFalse)
	waitPod(t, ns, victim, within, "the gate set False by hand True again, and Ready", func(p *corev1.Pod) bool {
		return gateOf(p) == corev1.ConditionTrue && podReady(p)
	})
	t.Logf("gate of %s set False by hand, no rollout: True and Ready again %s later", victim, time.Since(start).Round(100*time.Millisecond))

	start = time.Now()
	if err := bed.Client.CoreV1().Pods(ns).Delete(ctx, pods[1].Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, within, "the replacement of a deleted pod Ready", func(ctx context.Context) bool {
		return countPodsWhere(ctx, ns, func(p *corev1.Pod) bool {
			return p.UID != pods[1].UID && settledOn(p, "app", "app:1")
		}) == 6
	})
	t.Logf("pod %s deleted by hand: its replacement Ready %s later", pods[1].Name, time.Since(start).Round(100*time.Millisecond))
	if rec := rolloutRecord(t, ns, "Deployment", "web"); rec != "" {
		t.Errorf("a rollout record appeared with no commit: %s", rec)
	}
}
