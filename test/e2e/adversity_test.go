//go:build e2e

package e2e

// Issue 10, cases 1–7: in-place rollouts under adversity — a commit, a kill,
// a PodDisruptionBudget, a bad image, admission and new Pods getting in the
// way. Each test drives refit as a user does (the refit CLI, or refit run
// with a real Git server), works in its own namespace, and asserts from a
// watch the most Pods unavailable at once and the Pod UIDs.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// workload renders a Deployment, StatefulSet or DaemonSet whose one
// container "app" runs image; its Pods carry the label app: <name>.
type workload struct {
	kind, name     string
	replicas       int    // 0: not in Git (the API server's default, or an HPA's)
	maxUnavailable string // the strategy's maxUnavailable
	image          string
	restartDelay   string // the bed's in-place restart time for these Pods
	gate           bool   // refit's readiness gate in the template
	annotations    map[string]string
	labels         map[string]string // on the workload itself
	podLabels      map[string]string // on the Pods, beside app: <name>
	historyLimit   int               // revisionHistoryLimit; 0: not in Git
	env            string            // a MODE env var: a structural change
}

func flowMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%q: %q", k, m[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func (w workload) yaml() string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: apps/v1\nkind: %s\nmetadata:\n  name: %s\n", w.kind, w.name)
	if len(w.labels) > 0 {
		fmt.Fprintf(&b, "  labels: %s\n", flowMap(w.labels))
	}
	if len(w.annotations) > 0 {
		fmt.Fprintf(&b, "  annotations: %s\n", flowMap(w.annotations))
	}
	b.WriteString("spec:\n")
	if w.replicas > 0 {
		fmt.Fprintf(&b, "  replicas: %d\n", w.replicas)
	}
	if w.historyLimit > 0 {
		fmt.Fprintf(&b, "  revisionHistoryLimit: %d\n", w.historyLimit)
	}
	switch w.kind {
	case "Deployment":
		fmt.Fprintf(&b, "  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: %s}}\n", w.maxUnavailable)
	case "StatefulSet":
		fmt.Fprintf(&b, "  serviceName: %s\n  podManagementPolicy: Parallel\n", w.name)
		fmt.Fprintf(&b, "  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: %s}}\n", w.maxUnavailable)
	case "DaemonSet":
		fmt.Fprintf(&b, "  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: %s}}\n", w.maxUnavailable)
	}
	podLabels := map[string]string{"app": w.name}
	for k, v := range w.podLabels {
		podLabels[k] = v
	}
	fmt.Fprintf(&b, "  selector: {matchLabels: {app: %s}}\n  template:\n    metadata:\n      labels: %s\n", w.name, flowMap(podLabels))
	if w.restartDelay != "" {
		fmt.Fprintf(&b, "      annotations: {kwok.refit.dev/restart-delay: %q}\n", w.restartDelay)
	}
	b.WriteString("    spec:\n")
	if w.kind == "DaemonSet" {
		b.WriteString("      nodeSelector: {refit.dev/node-type: kwok}\n")
	}
	if w.gate {
		b.WriteString("      readinessGates: [{conditionType: InPlaceUpdateReady}]\n")
	}
	fmt.Fprintf(&b, "      containers:\n      - name: app\n        image: %q\n", w.image)
	if w.env != "" {
		fmt.Fprintf(&b, "        env: [{name: MODE, value: %q}]\n", w.env)
	}
	return b.String()
}

// with returns a copy of w changed by fn.
func (w workload) with(fn func(*workload)) workload {
	c := w
	c.annotations, c.labels, c.podLabels = copyMap(w.annotations), copyMap(w.labels), copyMap(w.podLabels)
	fn(&c)
	return c
}

func copyMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

func pdbYAML(name, maxUnavailable, selector string) string {
	return fmt.Sprintf("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: %s}\nspec:\n  maxUnavailable: %s\n  selector: %s\n",
		name, maxUnavailable, selector)
}

// applyCLI runs `refit apply` on dir to its end and fails the test unless
// it exits with want; it returns the output and how long it took.
func applyCLI(t *testing.T, ns, dir string, want int, extra ...string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	out, code := runRefitCLI(t, ns, append([]string{"apply", "--dir", dir, "--app", ns}, extra...)...)
	took := time.Since(start)
	if code != want {
		t.Fatalf("refit apply: exit %d after %s, want %d\n%s", code, took.Round(100*time.Millisecond), want, out)
	}
	return out, took
}

// ---------------------------------------------------------------------------
// Case 1: a commit during a rollout.

// A commit that changes the workload but not its Pod template, landing
// while an in-place rollout runs (refit run) or after the refit that ran it
// was SIGKILLed (refit apply again): the change is applied with the hold
// kept, the rollout finishes in place, no Pod is deleted or recreated, and
// the bound holds. Today such a commit goes the apply path, which drops the
// hold (partition, OnDelete, the record) and the controller deletes the
// Pods not yet patched.
func TestAdversityCommitMidRollout(t *testing.T) {
	kinds := []struct {
		kind  string
		base  workload
		extra int // Pods the commit adds (a scale-up)
		edit  func(*workload)
		check func(t *testing.T, ns string)
	}{
		{
			kind: "Deployment", extra: 1,
			base: workload{kind: "Deployment", name: "web", replicas: 6, maxUnavailable: "1", restartDelay: "4s"},
			edit: func(w *workload) { w.replicas = 7; w.labels = map[string]string{"tier": "gold"} },
			check: func(t *testing.T, ns string) {
				d, err := bed.Client.AppsV1().Deployments(ns).Get(context.Background(), "web", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if *d.Spec.Replicas != 7 || d.Labels["tier"] != "gold" {
					t.Errorf("deployment: replicas %d labels %v, want the commit's 7 and tier=gold", *d.Spec.Replicas, d.Labels)
				}
			},
		},
		{
			kind: "StatefulSet",
			base: workload{kind: "StatefulSet", name: "db", replicas: 6, maxUnavailable: "1", restartDelay: "4s"},
			edit: func(w *workload) {
				w.labels = map[string]string{"tier": "gold"}
				w.annotations = map[string]string{"team": "storage"}
				w.historyLimit = 3
			},
			check: func(t *testing.T, ns string) {
				s, err := bed.Client.AppsV1().StatefulSets(ns).Get(context.Background(), "db", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if s.Labels["tier"] != "gold" || s.Annotations["team"] != "storage" || s.Spec.RevisionHistoryLimit == nil || *s.Spec.RevisionHistoryLimit != 3 {
					t.Errorf("statefulset: labels %v annotations %v revisionHistoryLimit %v: the commit was not applied", s.Labels, s.Annotations, s.Spec.RevisionHistoryLimit)
				}
			},
		},
		{
			kind: "DaemonSet",
			base: workload{kind: "DaemonSet", name: "agent", maxUnavailable: "1", restartDelay: "4s"},
			edit: func(w *workload) {
				w.labels = map[string]string{"tier": "gold"}
				w.annotations = map[string]string{"team": "node"}
				w.historyLimit = 3
			},
			check: func(t *testing.T, ns string) {
				d, err := bed.Client.AppsV1().DaemonSets(ns).Get(context.Background(), "agent", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if d.Labels["tier"] != "gold" || d.Annotations["team"] != "node" || d.Spec.RevisionHistoryLimit == nil || *d.Spec.RevisionHistoryLimit != 3 {
					t.Errorf("daemonset: labels %v annotations %v revisionHistoryLimit %v: the commit was not applied", d.Labels, d.Annotations, d.Spec.RevisionHistoryLimit)
				}
			},
		},
	}
	for _, k := range kinds {
		pods := func(t *testing.T) int {
			if k.kind == "DaemonSet" {
				return kwokNodes(t)
			}
			return k.base.replicas
		}
		v1 := k.base.with(func(w *workload) { w.image = "app:1" })
		v2 := v1.with(func(w *workload) { w.image = "app:2" })
		v3 := v2.with(k.edit)
		// A scale-up makes a Pod the workload should have and has not yet:
		// unavailable from the moment the commit lands, whatever refit does.
		bound := 1 + k.extra

		t.Run(k.kind+"/WhileRunning", func(t *testing.T) {
			ns := namespace(t)
			n := pods(t)
			app := newGitApp(t, ns, "mid")
			app.commit(v1.yaml(), "v1")
			app.serve(t, "--grace", "0s")
			before := waitSettled(t, ns, n, "app", "app:1", 2*time.Minute)
			fw := watchFleet(t, ns)

			app.commit(v2.yaml(), "v2: image app:2")
			waitPatched(t, ns, "app", "app:2", 1, time.Minute)
			app.commit(v3.yaml(), "v3: the workload changes, its template does not")
			waitFor(t, 30*time.Second, "the v3 commit applied to the live "+k.kind, func(ctx context.Context) bool {
				return workloadLabel(ctx, ns, k.kind, v3.name, "tier") == "gold"
			})
			if left := countPodsWhere(context.Background(), ns, func(p *corev1.Pod) bool { return specImageOf(p, "app") == "app:1" }); left == 0 {
				t.Fatalf("every pod was patched before v3 landed: the test proves nothing")
			}
			after := waitSettled(t, ns, n+k.extra, "app", "app:2", 3*time.Minute)
			assertFleet(t, fw, fleetCheck{bound: bound, before: before, after: after, extra: k.extra})
			assertRestartedOnce(t, before, after, "app", "app:2")
			k.check(t, ns)
			waitReleased(t, ns, k.kind, v3.name, "app", "app:2", n+k.extra)
		})

		t.Run(k.kind+"/AfterKill", func(t *testing.T) {
			ns := namespace(t)
			n := pods(t)
			dir := t.TempDir()
			writeManifests(t, dir, v1.yaml())
			applyCLI(t, ns, dir, 0, "--wait")
			before := waitSettled(t, ns, n, "app", "app:1", 2*time.Minute)
			fw := watchFleet(t, ns)

			writeManifests(t, dir, v2.yaml())
			first := startCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--grace", "0s")
			waitPatched(t, ns, "app", "app:2", 1, time.Minute)
			first.kill()
			if rolloutRecord(t, ns, k.kind, v2.name) == "" {
				t.Fatalf("the rollout was over before the kill: the test proves nothing\n%s", first.out.String())
			}
			writeManifests(t, dir, v3.yaml())
			out, _ := applyCLI(t, ns, dir, 0, "--grace", "0s")
			after := waitSettled(t, ns, n+k.extra, "app", "app:2", 2*time.Minute)
			assertFleet(t, fw, fleetCheck{bound: bound, before: before, after: after, extra: k.extra})
			assertRestartedOnce(t, before, after, "app", "app:2")
			k.check(t, ns)
			waitReleased(t, ns, k.kind, v3.name, "app", "app:2", n+k.extra)
			t.Logf("second apply:\n%s", out)
		})
	}

	// A structural commit during a rollout ends it deliberately: the plan
	// says so, and the StatefulSet controller replaces every Pod under its
	// own strategy (maxUnavailable 1), with no hold left behind.
	t.Run("Structural", func(t *testing.T) {
		ns := namespace(t)
		m := startStatefulSetRollout(t, ns, "structural", nil)
		app, before, fw, v3 := m.app, m.before, m.fw, m.v3

		out := planDir(t, ns, app.name, v3.yaml())
		line := grepLines(out, "~ StatefulSet.apps/"+ns+"/db")
		if !strings.Contains(line, "Pods recreated") || !strings.Contains(strings.ToLower(line), "rollout") {
			t.Errorf("plan of a structural commit mid-rollout: want the Pods recreated and the in-place rollout named as ending; got %q\n%s", line, out)
		}
		if rolloutRecord(t, ns, "StatefulSet", "db") == "" {
			t.Fatalf("the rollout was over before the structural commit: the test proves nothing")
		}
		app.commit(v3.yaml(), "v3: an env var")
		waitFor(t, 3*time.Minute, "every pod replaced by the controller with MODE=fast on app:2", func(ctx context.Context) bool {
			list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
			if err != nil || len(list.Items) != 6 {
				return false
			}
			old := uidsOf(before)
			for i := range list.Items {
				p := &list.Items[i]
				if !settledOn(p, "app", "app:2") || len(p.Spec.Containers[0].Env) != 1 || old[p.Name] == p.UID {
					return false
				}
			}
			return true
		})
		waitReleased(t, ns, "StatefulSet", "db", "app", "app:2", 6)
		maxUnavailable, nUIDs, _, _ := fw.summary()
		t.Logf("most pods unavailable at once: %d (bound 1); %d UIDs", maxUnavailable, nUIDs)
		if maxUnavailable > 1 {
			t.Errorf("%d pods unavailable at once across the hand-over to the controller, bound 1", maxUnavailable)
		}
		if nUIDs != 12 {
			t.Errorf("%d UIDs seen, want 6 old and 6 recreated", nUIDs)
		}
	})

	// An InPlaceOnly workload refuses a structural commit during a
	// rollout: nothing changes, no Pod is recreated, the hold stays, and the
	// plan says it is refused.
	t.Run("RefusedInPlaceOnly", func(t *testing.T) {
		ns := namespace(t)
		m := startStatefulSetRollout(t, ns, "refused", map[string]string{"refit.dev/update-policy": "InPlaceOnly"})
		app, svc, before, fw, v3 := m.app, m.svc, m.before, m.fw, m.v3

		out := planDir(t, ns, app.name, v3.yaml())
		line := grepLines(out, "~ StatefulSet.apps/"+ns+"/db")
		if !strings.Contains(line, "REFUSED") || !strings.Contains(strings.ToLower(line), "rollout") {
			t.Errorf("plan of a refused commit mid-rollout: want REFUSED, naming the rollout that stays held; got %q\n%s", line, out)
		}
		if rolloutRecord(t, ns, "StatefulSet", "db") == "" {
			t.Fatalf("the rollout was over before the refused commit: the test proves nothing")
		}
		app.commit(v3.yaml(), "v3: refused")
		// Polls every second: fifteen of them see the refused commit.
		consistentlyTrue(t, 15*time.Second, "no pod recreated and nothing of the refused commit applied", func(ctx context.Context) (bool, string) {
			s, err := bed.Client.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
			if err != nil {
				return true, ""
			}
			if len(s.Spec.Template.Spec.Containers[0].Env) > 0 {
				return false, "the refused env var is in the StatefulSet's template"
			}
			for _, p := range podsOf(t, ns) {
				if uid := uidsOf(before)[p.Name]; uid != p.UID || p.DeletionTimestamp != nil {
					return false, "pod " + p.Name + " replaced or being deleted"
				}
			}
			return true, ""
		})
		maxUnavailable, nUIDs, deleted, _ := fw.summary()
		if maxUnavailable > 1 || nUIDs != 6 || len(deleted) > 0 {
			t.Errorf("refused commit: most unavailable %d (bound 1), %d UIDs for 6 pods, deleted %v", maxUnavailable, nUIDs, deleted)
		}
		t.Logf("refit run saw the refused commit: %v", strings.Contains(svc.out.String(), "v3: refused"))
	})
}

// workloadLabel reads a label of the live workload ("" if absent).
func workloadLabel(ctx context.Context, ns, kind, name, key string) string {
	var labels map[string]string
	switch kind {
	case "Deployment":
		if d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			labels = d.Labels
		}
	case "StatefulSet":
		if s, err := bed.Client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			labels = s.Labels
		}
	case "DaemonSet":
		if d, err := bed.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			labels = d.Labels
		}
	}
	return labels[key]
}

// planDir runs `refit plan` of manifest, laid out as the Git app's deploy/
// folder, for app: what a user runs before pushing.
func planDir(t *testing.T, ns, app, manifest string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeManifests(t, filepath.Join(dir, "deploy"), manifest)
	if err := os.WriteFile(filepath.Join(dir, "deploy", "kustomization.yaml"), []byte("resources: [app.yaml]\nnamespace: "+ns+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--path", "deploy", "--app", app)
	if code == 0 {
		t.Errorf("refit plan: exit 0 (no change), want the change planned\n%s", out)
	}
	return out
}

// ---------------------------------------------------------------------------
// Case 2: PodDisruptionBudgets.

// refit honours a PDB's allowance itself (PDBs gate evictions, not
// patches), counting the Pods it has just patched at once; two workloads
// under one PDB share it, whether one app or two apps of one refit run roll
// them out; a PDB with an empty selector covers every Pod of its namespace.
func TestAdversityPDB(t *testing.T) {
	t.Run("TighterThanMaxUnavailable", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "web", replicas: 10, maxUnavailable: "5", restartDelay: "3s", image: "app:1"}
		pdb := pdbYAML("web", "1", "{matchLabels: {app: web}}")
		testPDBWithCLI(t, ns, []workload{w}, pdb, "web", 10, 1)
	})
	t.Run("TwoWorkloadsOneApp", func(t *testing.T) {
		ns := namespace(t)
		a := workload{kind: "Deployment", name: "a", replicas: 5, maxUnavailable: "2", restartDelay: "3s", image: "app:1",
			podLabels: map[string]string{"tier": "web"}}
		b := a.with(func(w *workload) { w.name = "b" })
		pdb := pdbYAML("web", "1", "{matchLabels: {tier: web}}")
		testPDBWithCLI(t, ns, []workload{a, b}, pdb, "web", 10, 1)
	})
	t.Run("EmptySelector", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "web", replicas: 6, maxUnavailable: "3", restartDelay: "3s", image: "app:1"}
		testPDBWithCLI(t, ns, []workload{w}, pdbYAML("everything", "1", "{}"), "everything", 6, 1)
	})
	t.Run("TwoAppsOneRun", func(t *testing.T) {
		ns := namespace(t)
		a := workload{kind: "Deployment", name: "a", replicas: 5, maxUnavailable: "2", restartDelay: "3s", image: "app:1",
			podLabels: map[string]string{"tier": "web"}}
		b := a.with(func(w *workload) { w.name = "b" })
		pdb := pdbYAML("web", "1", "{matchLabels: {tier: web}}")
		g := newGitApp(t, ns, "pdb")
		files := func(a, b workload) map[string]string {
			return map[string]string{
				"a/kustomization.yaml": "resources: [app.yaml, pdb.yaml]\nnamespace: " + ns + "\n",
				"a/app.yaml":           a.yaml(),
				"a/pdb.yaml":           pdb,
				"b/kustomization.yaml": "resources: [app.yaml]\nnamespace: " + ns + "\n",
				"b/app.yaml":           b.yaml(),
			}
		}
		g.repo.Commit(files(a, b), "v1")
		user, pass := writeTemp(t, g.srv.Username()), writeTemp(t, g.srv.Password())
		var cfg strings.Builder
		cfg.WriteString("apiVersion: refit.dev/v1alpha1\nkind: Config\napps:\n")
		for _, name := range []string{"a", "b"} {
			fmt.Fprintf(&cfg, "- name: %s-%s\n  source: {url: %s, usernameFile: %s, passwordFile: %s}\n  path: %s\n  interval: 1s\n  namespace: %s\n",
				ns, name, g.repo.HTTPURL(), user, pass, name, ns)
		}
		startService(t, nil, "--config", writeTemp(t, cfg.String()), "--grace", "0s")
		before := waitSettled(t, ns, 10, "app", "app:1", 2*time.Minute)
		waitPDB(t, ns, "web", 10)
		fw := watchFleet(t, ns)
		bump := func(w workload) workload { return w.with(func(w *workload) { w.image = "app:2" }) }
		g.repo.Commit(files(bump(a), bump(b)), "v2: both apps to app:2")
		after := waitSettled(t, ns, 10, "app", "app:2", 3*time.Minute)
		assertFleet(t, fw, fleetCheck{bound: 1, before: before, after: after})
		assertRestartedOnce(t, before, after, "app", "app:2")
	})
}

// testPDBWithCLI deploys workloads and a PDB with refit apply, bumps every
// workload's image and checks that the PDB's allowance bounded the rollout.
func testPDBWithCLI(t *testing.T, ns string, ws []workload, pdb, pdbName string, n, bound int) {
	t.Helper()
	render := func(image string) string {
		docs := []string{pdb}
		for _, w := range ws {
			docs = append(docs, w.with(func(w *workload) { w.image = image }).yaml())
		}
		return strings.Join(docs, "---\n")
	}
	dir := t.TempDir()
	writeManifests(t, dir, render("app:1"))
	applyCLI(t, ns, dir, 0, "--wait")
	before := waitSettled(t, ns, n, "app", "app:1", 2*time.Minute)
	waitPDB(t, ns, pdbName, int32(n))
	fw := watchFleet(t, ns)
	writeManifests(t, dir, render("app:2"))
	_, took := applyCLI(t, ns, dir, 0, "--grace", "0s")
	after := waitSettled(t, ns, n, "app", "app:2", time.Minute)
	t.Logf("%d pods under a PDB allowing %d: rolled out in %s", n, bound, took.Round(100*time.Millisecond))
	assertFleet(t, fw, fleetCheck{bound: bound, before: before, after: after})
	assertRestartedOnce(t, before, after, "app", "app:2")
}

// ---------------------------------------------------------------------------
// Case 3: fix forward.

// A bad image without rollback fails after the first batch and leaves
// those Pods in ImagePullBackOff; the next commit's good image finishes in
// place — the Pods already down are patched without spending budget — and
// the apply does not sit in a health wait. (Pre-pull is off in the tests
// of a patched bad image: with it, the bad image never reaches a Pod.)
func TestAdversityFixForward(t *testing.T) {
	ns := namespace(t)
	w := workload{kind: "Deployment", name: "web", replicas: 8, maxUnavailable: "2", restartDelay: "2s", image: "app:1",
		annotations: map[string]string{"refit.dev/pre-pull": "disabled", "refit.dev/progress-deadline": "5m"}}
	dir := t.TempDir()
	writeManifests(t, dir, w.yaml())
	applyCLI(t, ns, dir, 0, "--wait")
	before := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
	fw := watchFleet(t, ns)

	writeManifests(t, dir, w.with(func(w *workload) { w.image = "app:bad" }).yaml())
	out, took := applyCLI(t, ns, dir, 1, "--grace", "0s")
	if !strings.Contains(out, "ErrImagePull") && !strings.Contains(out, "ImagePullBackOff") {
		t.Errorf("failed apply does not name the pull error:\n%s", out)
	}
	if took > time.Minute {
		t.Errorf("the bad image failed after %s: want it stopped at the first batch, not at a deadline", took.Round(time.Second))
	}
	// The rollout stops at the first Pod that fails; the rest of its batch
	// was patched too and reaches the pull error a moment later.
	bad := 0
	waitFor(t, 30*time.Second, "every pod on the bad image in a pull error", func(ctx context.Context) bool {
		bad = 0
		for _, p := range podsOf(t, ns) {
			if specImageOf(&p, "app") != "app:bad" {
				continue
			}
			bad++
			if cs := containerStatus(&p, "app"); cs == nil || cs.State.Waiting == nil || !isPullError(cs.State.Waiting.Reason) {
				return false
			}
		}
		return true
	})
	if bad < 1 || bad > 2 {
		t.Fatalf("%d pods on the bad image, want the first batch (1 or 2)", bad)
	}

	writeManifests(t, dir, w.with(func(w *workload) { w.image = "app:2" }).yaml())
	out, took = applyCLI(t, ns, dir, 0, "--grace", "0s", "--wait")
	t.Logf("fix forward: %s for 8 pods (%d of them down on the bad image)", took.Round(100*time.Millisecond), bad)
	if took > time.Minute {
		t.Errorf("the fix-forward apply took %s: it waited on health, or retried until a deadline\n%s", took.Round(time.Second), out)
	}
	after := waitSettled(t, ns, 8, "app", "app:2", time.Minute)
	assertFleet(t, fw, fleetCheck{bound: 2, before: before, after: after})
	assertRestartedOnce(t, before, after, "app", "app:2")
	waitReleased(t, ns, "Deployment", "web", "app", "app:2", 8)
}

// ---------------------------------------------------------------------------
// Case 4: rollback.

// With refit.dev/rollback: auto a bad image fails and the patched Pods go
// back to the images they ran before this rollout, in place, within the
// same window (and gate drain); the Deployment and its ReplicaSet end on
// the previous images, no pause and no record left; refit run does not
// retry the failed commit (drift passes every 2 s).
func TestAdversityRollback(t *testing.T) {
	t.Run("Gated", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "shop", replicas: 8, maxUnavailable: "2", restartDelay: "2s", image: "app:1", gate: true,
			annotations: map[string]string{"refit.dev/pre-pull": "disabled", "refit.dev/rollback": "auto", "refit.dev/grace-seconds": "1", "refit.dev/progress-deadline": "5m"}}
		app := newGitApp(t, ns, "rollback")
		app.commit(w.yaml(), "v1")
		app.serve(t, "--drift-interval", "2s")
		before := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
		fw := watchFleet(t, ns)
		app.commit(w.with(func(w *workload) { w.image = "app:bad" }).yaml(), "v2: a bad image")
		waitPatched(t, ns, "app", "app:bad", 1, time.Minute)
		after := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
		assertRolledBack(t, ns, before, after, 2)
		assertFleet(t, fw, fleetCheck{bound: 2, before: before, after: after})
	})

	// A re-target then a failure: app:1 → app:2 (some Pods done) → app:bad.
	// Every Pod goes back to app:1, what it ran before this rollout,
	// including those that had finished on app:2.
	t.Run("RetargetThenFailure", func(t *testing.T) {
		w := workload{kind: "Deployment", name: "shop", replicas: 8, maxUnavailable: "2", restartDelay: "3s", image: "app:1",
			annotations: map[string]string{"refit.dev/pre-pull": "disabled", "refit.dev/rollback": "auto", "refit.dev/progress-deadline": "5m"}}
		testRetargetThenFailure(t, w, "", 2)
	})

	// The same under a PDB allowing 1 while maxUnavailable is 3: the Pods
	// that finished on app:2 go back one at a time, as the PDB says.
	t.Run("RetargetThenFailureUnderPDB", func(t *testing.T) {
		w := workload{kind: "Deployment", name: "shop", replicas: 8, maxUnavailable: "3", restartDelay: "3s", image: "app:1",
			annotations: map[string]string{"refit.dev/pre-pull": "disabled", "refit.dev/rollback": "auto", "refit.dev/progress-deadline": "5m"}}
		testRetargetThenFailure(t, w, pdbYAML("shop", "1", "{matchLabels: {app: shop}}"), 1)
	})
}

// testRetargetThenFailure rolls w out app:1 → app:2 with refit run, pushes
// app:bad once two Pods run app:2, and checks that every Pod goes back to
// app:1 within bound, and that the failed commit is not retried.
func testRetargetThenFailure(t *testing.T, w workload, pdb string, bound int) {
	t.Helper()
	ns := namespace(t)
	manifest := func(image string) string {
		m := w.with(func(w *workload) { w.image = image }).yaml()
		if pdb != "" {
			m += "---\n" + pdb
		}
		return m
	}
	app := newGitApp(t, ns, "retarget")
	app.commit(manifest("app:1"), "v1")
	app.serve(t, "--grace", "0s", "--drift-interval", "2s")
	before := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
	if pdb != "" {
		waitPDB(t, ns, "shop", 8)
	}
	fw := watchFleet(t, ns)
	app.commit(manifest("app:2"), "v2: app:2")
	waitFor(t, time.Minute, "2 pods done on app:2", func(ctx context.Context) bool {
		return countPodsWhere(ctx, ns, func(p *corev1.Pod) bool { return settledOn(p, "app", "app:2") }) >= 2
	})
	if left := countPodsWhere(context.Background(), ns, func(p *corev1.Pod) bool { return specImageOf(p, "app") == "app:1" }); left < 2 {
		t.Fatalf("only %d pods left on app:1 when app:bad is pushed: the test proves nothing", left)
	}
	app.commit(manifest("app:bad"), "v3: a bad image")
	waitPatched(t, ns, "app", "app:bad", 1, time.Minute)
	after := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
	assertRolledBack(t, ns, before, after, 8)
	assertFleet(t, fw, fleetCheck{bound: bound, before: before, after: after})
}

// assertRolledBack checks what a finished rollback leaves: at most
// maxTouched Pods restarted, the Deployment and its ReplicaSet on app:1,
// no pause, no record, and no new patch for a while (drift passes run).
func assertRolledBack(t *testing.T, ns string, before, after []corev1.Pod, maxTouched int) {
	t.Helper()
	touched := 0
	for _, r := range restartsOf(after) {
		if r > 0 {
			touched++
		}
	}
	if touched == 0 || touched > maxTouched {
		t.Errorf("%d pods restarted, want 1 to %d", touched, maxTouched)
	}
	waitReleased(t, ns, "Deployment", "shop", "app", "app:1", 8)
	settledRestarts := restartsOf(after)
	consistentlyTrue(t, 15*time.Second, "the failed commit not retried (every pod on app:1, no new restart)", func(ctx context.Context) (bool, string) {
		for _, p := range podsOf(t, ns) {
			if specImageOf(&p, "app") != "app:1" || restartsOf([]corev1.Pod{p})[p.Name] != settledRestarts[p.Name] {
				return false, "pod " + p.Name + " patched again: " + specImageOf(&p, "app") + " " + describePod(&p)
			}
		}
		if dep, _, _ := deploymentTemplates(t, ns, "shop", "app"); dep != "app:1" {
			return false, "deployment template back on " + dep
		}
		return true, ""
	})
}

// ---------------------------------------------------------------------------
// Case 5: readiness gates are not left False.

// Every Pod refit gives up on — its patch refused by admission mid-rollout
// — or rolls back ends with InPlaceUpdateReady True and Ready.
func TestAdversityGates(t *testing.T) {
	t.Run("AfterRefusedPatch", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "web", replicas: 8, maxUnavailable: "1", restartDelay: "3s", image: "app:1", gate: true,
			annotations: map[string]string{"refit.dev/grace-seconds": "1", "refit.dev/progress-deadline": "5m"}}
		dir := t.TempDir()
		writeManifests(t, dir, w.yaml())
		applyCLI(t, ns, dir, 0, "--wait")
		before := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
		fw := watchFleet(t, ns)
		writeManifests(t, dir, w.with(func(w *workload) { w.image = "app:2" }).yaml())
		apply := startCLI(t, ns, "apply", "--dir", dir, "--app", ns)
		waitPatched(t, ns, "app", "app:2", 1, time.Minute)

		const message = "pod images are frozen in this namespace"
		installPolicy(t, refusePodImageUpdates(ns, message))
		waitRefused(t, ns, message)
		inForce := time.Now()
		// The next Pod is patched once the one in flight restarted (3 s) and
		// drained (1 s); a retry until the 5-minute deadline would miss this.
		code := apply.exitWithin(t, 30*time.Second)
		t.Logf("refit apply exited %s after the policy was in force", time.Since(inForce).Round(100*time.Millisecond))
		if code != 1 {
			t.Errorf("refit apply: exit %d, want 1 (the refusal fails the rollout)\n%s", code, apply.out.String())
		}
		if !reportsPodAndMessage(apply.out.String(), podsOf(t, ns), message) {
			t.Errorf("refit apply does not report the refused Pod with the policy's message %q:\n%s", message, apply.out.String())
		}
		if n := countPodsWhere(context.Background(), ns, func(p *corev1.Pod) bool { return specImageOf(p, "app") == "app:1" }); n == 0 {
			t.Errorf("every pod was patched although the policy refused the patch")
		}
		after := waitGatesTrue(t, ns, 8)
		assertFleet(t, fw, fleetCheck{bound: 1, before: before, after: after})
	})

	t.Run("AfterRollback", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "shop", replicas: 6, maxUnavailable: "2", restartDelay: "2s", image: "app:1", gate: true,
			annotations: map[string]string{"refit.dev/pre-pull": "disabled", "refit.dev/rollback": "auto", "refit.dev/grace-seconds": "1", "refit.dev/progress-deadline": "5m"}}
		dir := t.TempDir()
		writeManifests(t, dir, w.yaml())
		applyCLI(t, ns, dir, 0, "--wait")
		before := waitSettled(t, ns, 6, "app", "app:1", 2*time.Minute)
		fw := watchFleet(t, ns)
		writeManifests(t, dir, w.with(func(w *workload) { w.image = "app:bad" }).yaml())
		applyCLI(t, ns, dir, 1)
		after := waitGatesTrue(t, ns, 6)
		for _, p := range after {
			if specImageOf(&p, "app") != "app:1" {
				t.Errorf("pod %s left on %s after the rollback", p.Name, specImageOf(&p, "app"))
			}
		}
		assertFleet(t, fw, fleetCheck{bound: 2, before: before, after: after})
	})
}

// reportsPodAndMessage reports whether a line of out names one of pods
// together with message.
func reportsPodAndMessage(out string, pods []corev1.Pod, message string) bool {
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, message) {
			continue
		}
		for _, p := range pods {
			if strings.Contains(line, p.Name) {
				return true
			}
		}
	}
	return false
}

// waitGatesTrue waits until the namespace's n Pods are all Running and
// Ready with refit's gate True, whatever image they run.
func waitGatesTrue(t *testing.T, ns string, n int) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var off []string
	err := waitCond(time.Minute, func(ctx context.Context) bool {
		list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
		if err != nil {
			return false
		}
		pods, off = list.Items, nil
		for i := range pods {
			p := &pods[i]
			if !podReady(p) || gateOf(p) != corev1.ConditionTrue || p.Status.Phase != corev1.PodRunning {
				off = append(off, fmt.Sprintf("%s: gate=%q %s", p.Name, gateOf(p), describePod(p)))
			}
		}
		return len(pods) == n && len(off) == 0
	})
	if err != nil {
		t.Fatalf("want %d pods Ready with InPlaceUpdateReady True within 1m; %d pods, not: %v", n, len(pods), off)
	}
	return pods
}

// refusePodImageUpdates is a ValidatingAdmissionPolicy, bound to ns only,
// that refuses any change of a Pod's container images (as an image policy
// that pins what runs would).
func refusePodImageUpdates(ns, message string) string {
	return fill(`apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: NAME}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [UPDATE], resources: [pods]}
  validations:
  - expression: "object.spec.containers.map(c, c.image) == oldObject.spec.containers.map(c, c.image)"
    message: "MESSAGE"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: NAME}
spec:
  policyName: NAME
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: NS}}
`, "NAME", "refit-e2e-freeze-"+ns, "MESSAGE", message, "NS", ns)
}

// waitRefused waits until the API server refuses an image patch of a Pod
// of ns with message: the policy is in force.
func waitRefused(t *testing.T, ns, message string) {
	t.Helper()
	var last string
	err := waitCond(30*time.Second, func(ctx context.Context) bool {
		pods := podsOf(t, ns)
		if len(pods) == 0 {
			return false
		}
		_, err := dryRunImagePatch(ctx, &pods[0], "app", "app:probe")
		last = fmt.Sprint(err)
		return err != nil && strings.Contains(err.Error(), message)
	})
	if err != nil {
		t.Fatalf("the validating policy is not in force after 30s; last dry-run: %s", last)
	}
}

// ---------------------------------------------------------------------------
// Case 6: admission.

// A MutatingAdmissionPolicy rewrites the new image to a mirror on Pod
// CREATE and UPDATE: the in-place rollout completes on the admitted image,
// no Pod recreated, long before the progress deadline. A
// ValidatingAdmissionPolicy that refuses image updates makes refit plan the
// workload as recreated, with the policy's message, and refit apply send it
// the ordinary way at once.
func TestAdversityAdmission(t *testing.T) {
	t.Run("MutatingPolicyRewritesTheImage", func(t *testing.T) {
		ns := namespace(t)
		installPolicy(t, fill(`apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicy
metadata: {name: NAME}
spec:
  failurePolicy: Fail
  reinvocationPolicy: Never
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [pods]}
  mutations:
  - patchType: ApplyConfiguration
    applyConfiguration:
      expression: >
        Object{spec: Object.spec{containers: object.spec.containers.map(c,
          Object.spec.containers{name: c.name, image: c.image == "app:2" ? "mirror.local/app:2" : c.image})}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingAdmissionPolicyBinding
metadata: {name: NAME}
spec:
  policyName: NAME
  matchResources:
    namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: NS}}
`, "NAME", "refit-e2e-mirror-"+ns, "NS", ns))
		probe := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app:2"}}}}
		var last string
		if err := waitCond(30*time.Second, func(ctx context.Context) bool {
			got, err := bed.Client.CoreV1().Pods(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				last = err.Error()
				return false
			}
			last = specImageOf(got, "app")
			return last == "mirror.local/app:2"
		}); err != nil {
			t.Fatalf("the mutating policy is not in force after 30s: a dry-run Pod of app:2 is admitted as %s", last)
		}

		w := workload{kind: "Deployment", name: "web", replicas: 6, maxUnavailable: "2", restartDelay: "2s", image: "app:1",
			annotations: map[string]string{"refit.dev/progress-deadline": "5m"}}
		dir := t.TempDir()
		writeManifests(t, dir, w.yaml())
		applyCLI(t, ns, dir, 0, "--wait")
		before := waitSettled(t, ns, 6, "app", "app:1", 2*time.Minute)
		fw := watchFleet(t, ns)
		writeManifests(t, dir, w.with(func(w *workload) { w.image = "app:2" }).yaml())
		apply := startCLI(t, ns, "apply", "--dir", dir, "--app", ns, "--grace", "0s")
		// The deadline is 5 minutes: a rollout that waits for "app:2" to
		// show up would fail only then.
		if code := apply.exitWithin(t, 90*time.Second); code != 0 {
			t.Fatalf("refit apply: exit %d, want 0\n%s", code, apply.out.String())
		}
		after := waitSettled(t, ns, 6, "app", "mirror.local/app:2", time.Minute)
		assertFleet(t, fw, fleetCheck{bound: 2, before: before, after: after})
		assertRestartedOnce(t, before, after, "app", "mirror.local/app:2")
	})

	t.Run("ValidatingPolicyRefusesThePatch", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "web", replicas: 6, maxUnavailable: "2", restartDelay: "2s", image: "app:1",
			annotations: map[string]string{"refit.dev/progress-deadline": "5m"}}
		dir := t.TempDir()
		writeManifests(t, dir, w.yaml())
		applyCLI(t, ns, dir, 0, "--wait")
		before := waitSettled(t, ns, 6, "app", "app:1", 2*time.Minute)
		const message = "pod images are frozen in this namespace"
		installPolicy(t, refusePodImageUpdates(ns, message))
		waitRefused(t, ns, message)

		writeManifests(t, dir, w.with(func(w *workload) { w.image = "app:2" }).yaml())
		out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns)
		line := grepLines(out, "~ Deployment.apps/"+ns+"/web")
		if code != 2 || !strings.Contains(line, "Pods recreated") || !strings.Contains(line, "the API server refuses the image patch") ||
			!strings.Contains(line, message) {
			t.Errorf("plan: exit %d; want the Deployment recreated because the API server refuses the image patch, with %q; got %q\n%s",
				code, message, line, out)
		}
		fw := watchFleet(t, ns)
		out, took := applyCLI(t, ns, dir, 0, "--grace", "0s", "--wait")
		if took > 90*time.Second {
			t.Errorf("refit apply took %s: it retried the refused patch\n%s", took.Round(time.Second), out)
		}
		after := waitSettled(t, ns, 6, "app", "app:2", time.Minute)
		old := uidsOf(before)
		for _, p := range after {
			if old[p.Name] == p.UID || containerStatus(&p, "app").RestartCount != 0 {
				t.Errorf("pod %s: want a new Pod made by the Deployment controller, %s", p.Name, describePod(&p))
			}
		}
		// The Deployment controller's own rolling update replaces the Pods;
		// no Pod of before was patched (none restarted, all deleted).
		_, nUIDs, deleted, _ := fw.summary()
		if nUIDs != 12 || len(deleted) < 6 {
			t.Errorf("%d UIDs seen, %d pods deleted: want the 6 pods replaced by 6 new ones", nUIDs, len(deleted))
		}
	})
}

// ---------------------------------------------------------------------------
// Case 7: new Pods' gates.

// With refit run running and no rollout, a gated Deployment scaled by hand
// (as an HPA would) gets its new Pods Ready within seconds: refit opens
// their gate from a watch. refit run killed mid-rollout of a gated
// workload and started again leaves no Pod NotReady.
func TestAdversityNewPodGates(t *testing.T) {
	t.Run("ScaleUpWithoutRollout", func(t *testing.T) {
		ns := namespace(t)
		// No replicas in Git: they are the HPA's (here the test's).
		w := workload{kind: "Deployment", name: "web", maxUnavailable: "1", image: "app:1", gate: true}
		app := newGitApp(t, ns, "gates")
		app.commit(w.yaml(), "v1")
		svc := app.serve(t, "--grace", "0s", "--drift-interval", "1h")
		before := waitSettled(t, ns, 1, "app", "app:1", 2*time.Minute)
		waitFor(t, time.Minute, "the first deploy reconciled", func(context.Context) bool {
			return grepLines(svc.metrics(t), appSeries("refit_reconciles_total", "gates", "success")) != ""
		})
		fw := watchFleet(t, ns)
		start := time.Now()
		scale := []byte(`{"spec":{"replicas":4}}`)
		if _, err := bed.Client.AppsV1().Deployments(ns).Patch(context.Background(), "web", types.MergePatchType, scale, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		after := waitSettled(t, ns, 4, "app", "app:1", 15*time.Second)
		t.Logf("scale 1 → 4 with no rollout: every new pod Ready, gate True, %s after the scale", time.Since(start).Round(100*time.Millisecond))
		_, nUIDs, deleted, _ := fw.summary()
		if nUIDs != 4 || len(deleted) > 0 {
			t.Errorf("%d UIDs seen (want 4), deleted %v", nUIDs, deleted)
		}
		if uidsOf(after)[before[0].Name] != before[0].UID {
			t.Errorf("pod %s replaced", before[0].Name)
		}
	})

	t.Run("KilledMidRollout", func(t *testing.T) {
		ns := namespace(t)
		w := workload{kind: "Deployment", name: "web", replicas: 8, maxUnavailable: "2", restartDelay: "3s", image: "app:1", gate: true,
			annotations: map[string]string{"refit.dev/grace-seconds": "2"}}
		app := newGitApp(t, ns, "killed")
		app.commit(w.yaml(), "v1")
		first := app.serve(t)
		before := waitSettled(t, ns, 8, "app", "app:1", 2*time.Minute)
		fw := watchFleet(t, ns)
		app.commit(w.with(func(w *workload) { w.image = "app:2" }).yaml(), "v2")
		// Kill while a gate is False: the Pod drains, or restarts.
		waitFor(t, time.Minute, "a pod's gate set False by the rollout", func(ctx context.Context) bool {
			return countPodsWhere(ctx, ns, func(p *corev1.Pod) bool { return gateOf(p) == corev1.ConditionFalse }) > 0
		})
		first.kill()
		if rolloutRecord(t, ns, "Deployment", "web") == "" {
			t.Fatalf("the rollout was over before the kill: the test proves nothing")
		}
		app.serve(t)
		after := waitSettled(t, ns, 8, "app", "app:2", 2*time.Minute)
		assertFleet(t, fw, fleetCheck{bound: 2, before: before, after: after})
		assertRestartedOnce(t, before, after, "app", "app:2")
		waitReleased(t, ns, "Deployment", "web", "app", "app:2", 8)
	})
}

// statefulSetMidRollout is a StatefulSet of 6 (bound 1, 4 s restarts)
// whose in-place rollout app:1 → app:2 under refit run has patched its
// first Pod; v3 is the same with an env var added (a structural commit).
type statefulSetMidRollout struct {
	app    *gitApp
	svc    *service
	before []corev1.Pod
	fw     *fleetWatch
	v3     workload
}

func startStatefulSetRollout(t *testing.T, ns, appName string, annotations map[string]string) statefulSetMidRollout {
	t.Helper()
	base := workload{kind: "StatefulSet", name: "db", replicas: 6, maxUnavailable: "1", restartDelay: "4s", image: "app:1", annotations: annotations}
	v2 := base.with(func(w *workload) { w.image = "app:2" })
	m := statefulSetMidRollout{app: newGitApp(t, ns, appName), v3: v2.with(func(w *workload) { w.env = "fast" })}
	m.app.commit(base.yaml(), "v1")
	m.svc = m.app.serve(t, "--grace", "0s")
	m.before = waitSettled(t, ns, 6, "app", "app:1", 2*time.Minute)
	m.fw = watchFleet(t, ns)
	m.app.commit(v2.yaml(), "v2: image app:2")
	waitPatched(t, ns, "app", "app:2", 1, time.Minute)
	return m
}
