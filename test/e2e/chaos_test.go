//go:build e2e

package e2e

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// chaosSelected: the chaos test takes minutes, so the ordinary e2e run
// skips it; `make chaos` sets REFIT_CHAOS=1, and `-run TestChaos` asks for
// it by name.
func chaosSelected() bool {
	if os.Getenv("REFIT_CHAOS") == "1" {
		return true
	}
	f := flag.Lookup("test.run")
	return f != nil && strings.Contains(f.Value.String(), "TestChaos")
}

// chaosApp is one app of four workloads, with and without the readiness
// gate, two of them under one PodDisruptionBudget and one under its own.
// %[1]d … %[4]d are the image versions of web, api, db and agent.
const chaosApp = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {refit.dev/grace-seconds: "1"}
spec:
  replicas: 8
  strategy: {rollingUpdate: {maxUnavailable: 2}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, pdb: shared}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - {name: web, image: "web:%[1]d"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 6
  strategy: {rollingUpdate: {maxUnavailable: 3}}
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
      - {name: api, image: "api:%[2]d"}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  annotations: {refit.dev/grace-seconds: "1"}
spec:
  replicas: 5
  serviceName: db
  podManagementPolicy: Parallel
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 2}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db, pdb: shared}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - {name: db, image: "db:%[3]d"}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector: {matchLabels: {app: agent}}
  updateStrategy:
    type: RollingUpdate
    rollingUpdate: {maxUnavailable: 1}
  template:
    metadata: {labels: {app: agent}}
    spec:
      nodeSelector: {refit.dev/node-type: kwok}
      containers:
      - {name: agent, image: "agent:%[4]d"}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: shared}
spec:
  maxUnavailable: 3
  selector: {matchLabels: {pdb: shared}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: api}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: api}}
`

// chaosWorkload is one workload of chaosApp and what the chaos test knows
// of it.
type chaosWorkload struct {
	kind, name string
	pods       int // Pods (a DaemonSet: nodes)
	version    int
}

// TestChaos runs in-place rollouts of Deployments, a StatefulSet and a
// DaemonSet, with and without the readiness gate and PodDisruptionBudgets,
// through `refit apply` processes SIGKILLed at random points, each followed
// by a restart and, in some rounds, a new commit first. A watch over every
// Pod asserts that no workload and no PDB ever had more Pods unavailable than
// it allows, that no Pod was recreated, and every round must converge: all
// Pods Ready on the newest images, holds released, no rollout record left.
// REFIT_CHAOS_SEED replays the random choices (not the cluster's timing);
// REFIT_CHAOS_ROUNDS sets the least number of rounds (default 6; more run
// until there have been 20 rollouts).
func TestChaos(t *testing.T) {
	if !chaosSelected() {
		t.Skip("chaos test: run with REFIT_CHAOS=1 or -run TestChaos (make chaos)")
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv("REFIT_CHAOS_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("REFIT_CHAOS_SEED %q: %v", s, err)
		}
	}
	rounds := 6
	if s := os.Getenv("REFIT_CHAOS_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("REFIT_CHAOS_ROUNDS %q: want a positive number", s)
		}
		rounds = n
	}
	t.Logf("chaos: seed %d (REFIT_CHAOS_SEED=%d replays these choices), %d rounds", seed, seed, rounds)
	rng := rand.New(rand.NewSource(seed))
	start := time.Now()

	nodes, err := bed.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: "refit.dev/node-type=kwok"})
	if err != nil {
		t.Fatal(err)
	}
	workloads := []*chaosWorkload{
		{kind: "Deployment", name: "web", pods: 8, version: 1},
		{kind: "Deployment", name: "api", pods: 6, version: 1},
		{kind: "StatefulSet", name: "db", pods: 5, version: 1},
		{kind: "DaemonSet", name: "agent", pods: len(nodes.Items), version: 1},
	}
	ns, dir := namespace(t), t.TempDir()
	write := func() {
		writeManifests(t, dir, fmt.Sprintf(chaosApp, workloads[0].version, workloads[1].version, workloads[2].version, workloads[3].version))
	}
	write()
	mustApplyDir(t, ns, dir)
	chaosConverged(t, ns, workloads, "the first apply")

	agent := groupOf(t, "daemonset agent (nodes)", "app=agent", len(nodes.Items), 1)
	agent.perNode = true
	bw := watchBound(t, ns,
		groupOf(t, "deployment web (gated)", "app=web", 8, 2),
		groupOf(t, "deployment api", "app=api", 6, 3),
		groupOf(t, "statefulset db (gated)", "app=db", 5, 2),
		agent,
		groupOf(t, "pdb shared (web + db)", "pdb=shared", 13, 3),
		groupOf(t, "pdb api", "app=api", 6, 1),
	)

	// At least rounds rounds, and as many more as it takes to reach 20
	// rollouts (a round bumps one to four workloads).
	var rollouts, kills, commits, round int
	for round = 1; round <= rounds || rollouts < 20; round++ {
		bumped := bumpSome(rng, workloads)
		rollouts += len(bumped)
		write()
		allowed := 1 + rng.Intn(2)
		killed := 0
		for {
			p := startApply(t, ns, dir)
			if killed == allowed {
				if out, code := p.finish(t, 3*time.Minute); code != 0 {
					t.Fatalf("round %d (seed %d): the last refit apply: exit %d\n%s", round, seed, code, out)
				}
				break
			}
			delay := time.Duration(rng.Int63n(int64(10 * time.Second)))
			select {
			case <-p.done:
			case <-time.After(delay):
			}
			if !p.kill() {
				if out, code := p.finish(t, time.Second); code != 0 {
					t.Fatalf("round %d (seed %d): refit apply: exit %d\n%s", round, seed, code, out)
				}
				t.Logf("round %d: refit finished before the kill at %s", round, delay.Round(time.Millisecond))
				break
			}
			killed++
			kills++
			msg := fmt.Sprintf("round %d: bumped %s; SIGKILL after %s", round, strings.Join(bumped, ", "), delay.Round(time.Millisecond))
			if rng.Float64() < 0.4 {
				w := workloads[rng.Intn(len(workloads))]
				w.version++
				rollouts++
				commits++
				write()
				msg += fmt.Sprintf("; new commit %s:%d before the restart", w.name, w.version)
			}
			t.Log(msg)
		}
		chaosConverged(t, ns, workloads, fmt.Sprintf("round %d (seed %d)", round, seed))
	}

	r := bw.report()
	var b strings.Builder
	fmt.Fprintf(&b, "chaos: seed %d, %d rounds, %d rollouts (%d of them a new commit before a restart), %d SIGKILLs, %d pods created, %d deleted, %d pod events, %s\n",
		seed, round-1, rollouts, commits, kills, len(r.created), len(r.deleted), r.events, time.Since(start).Round(time.Second))
	fmt.Fprintf(&b, "%-30s %6s %6s %10s\n", "workload / PDB", "worst", "bound", "times over")
	for _, g := range r.groups {
		fmt.Fprintf(&b, "%-30s %6d %6d %10d\n", g.name, g.worst, g.bound, g.overs)
	}
	t.Log("\n" + b.String())
	r.assertBounds(t)
	r.assertNoneReplaced(t)
}

// bumpSome gives each workload a new image with probability 3/4 (at least
// one per round) and returns the new images.
func bumpSome(rng *rand.Rand, workloads []*chaosWorkload) []string {
	var out []string
	for _, w := range workloads {
		if rng.Intn(4) > 0 {
			w.version++
			out = append(out, fmt.Sprintf("%s:%d", w.name, w.version))
		}
	}
	if len(out) == 0 {
		w := workloads[rng.Intn(len(workloads))]
		w.version++
		out = append(out, fmt.Sprintf("%s:%d", w.name, w.version))
	}
	sort.Strings(out)
	return out
}

// chaosConverged waits until every workload runs its newest image on all its
// Pods, Ready (so with the gate True where there is one), and refit has let
// go of it: no rollout record, a Deployment unpaused, a StatefulSet's
// partition and a DaemonSet's strategy as Git has them.
func chaosConverged(t *testing.T, ns string, workloads []*chaosWorkload, when string) {
	t.Helper()
	for _, w := range workloads {
		image := fmt.Sprintf("%s:%d", w.name, w.version)
		waitOnImage(t, ns, "app="+w.name, w.pods, w.name, image, 2*time.Minute)
	}
	waitUntil(t, 30*time.Second, when+": every hold released, no rollout record", func(ctx context.Context) (bool, string) {
		var held []string
		for _, w := range workloads {
			if _, ok, err := recordOf(ctx, ns, w.kind, w.name); err != nil {
				return false, err.Error()
			} else if ok {
				held = append(held, w.name+": rollout record")
			}
		}
		dep, err := bed.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		for _, d := range dep.Items {
			if d.Spec.Paused {
				held = append(held, d.Name+": paused")
			}
		}
		sts, err := bed.Client.AppsV1().StatefulSets(ns).Get(ctx, "db", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if ru := sts.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil && *ru.Partition != 0 {
			held = append(held, fmt.Sprintf("db: partition %d", *ru.Partition))
		}
		if sts.Status.CurrentRevision != sts.Status.UpdateRevision {
			held = append(held, "db: current revision is not the update revision")
		}
		ds, err := bed.Client.AppsV1().DaemonSets(ns).Get(ctx, "agent", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType {
			held = append(held, "agent: strategy "+string(ds.Spec.UpdateStrategy.Type))
		}
		return len(held) == 0, strings.Join(held, "; ")
	})
	// The gate is refit's: every gated Pod must end with it True.
	for _, pod := range livePods(context.Background(), t, ns, "") {
		for _, g := range pod.Spec.ReadinessGates {
			if g.ConditionType != "InPlaceUpdateReady" {
				continue
			}
			ok := false
			for _, c := range pod.Status.Conditions {
				ok = ok || c.Type == g.ConditionType && c.Status == corev1.ConditionTrue
			}
			if !ok {
				t.Errorf("%s: pod %s: gate InPlaceUpdateReady not True", when, pod.Name)
			}
		}
	}
}
