//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/gitserver"
)

// gateType is the readiness gate refit owns.
const gateType corev1.PodConditionType = "InPlaceUpdateReady"

// gitApp is an app in a repository of the test Git server: its manifests
// live in deploy/, with a kustomization that sets the test's namespace.
type gitApp struct {
	srv  *gitserver.Server
	repo *gitserver.TestRepo
	ns   string
	name string
}

func newGitApp(t *testing.T, ns, name string) *gitApp {
	t.Helper()
	srv := gitserver.New(t, gitserver.DefaultOptions())
	return &gitApp{srv: srv, repo: srv.NewRepo(t, name), ns: ns, name: name}
}

// commit pushes manifest as deploy/app.yaml and returns the commit.
func (g *gitApp) commit(manifest, msg string) string {
	return g.repo.Commit(map[string]string{
		"deploy/kustomization.yaml": "resources: [app.yaml]\nnamespace: " + g.ns + "\n",
		"deploy/app.yaml":           manifest,
	}, msg)
}

// serviceArgs are the single-app flags of `refit run` for this app: a
// poll every second, so a commit lands within about a second.
func (g *gitApp) serviceArgs(extra ...string) []string {
	return append([]string{"--repo", g.repo.HTTPURL(), "--username", g.srv.Username(), "--path", "deploy",
		"--interval", "1s", "--app", g.name, "-n", g.ns}, extra...)
}

// serve starts `refit run` for this app.
func (g *gitApp) serve(t *testing.T, extra ...string) *service {
	t.Helper()
	return startService(t, []string{"REFIT_GIT_PASSWORD=" + g.srv.Password()}, g.serviceArgs(extra...)...)
}

// startCLI starts a refit command in the background against the bed, for a
// test that kills it or acts while it runs. It is killed when the test ends.
func startCLI(t *testing.T, ns string, args ...string) *service {
	t.Helper()
	cmd := exec.Command(refit(t), append(args, "--kubeconfig", bed.Kubeconfig, "-n", ns)...)
	s := &service{cmd: cmd, out: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("refit %s output:\n%s", args[0], s.out.String())
		}
	})
	return s
}

// exitWithin waits for a command started by startCLI to exit and returns
// its exit code, failing the test if it is still running after timeout.
func (s *service) exitWithin(t *testing.T, timeout time.Duration) int {
	t.Helper()
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
		return s.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		_ = s.cmd.Process.Kill()
		<-done
		t.Fatalf("refit %s still running after %s; output:\n%s", s.cmd.Args[1], timeout, s.out.String())
		return -1
	}
}

// kill SIGKILLs the process, as a node failure or an OOM kill would.
func (s *service) kill() {
	s.stop(syscall.SIGKILL)
}

// consistentlyTrue checks cond every 200 ms for d and fails the test the
// first time it does not hold: the way to prove that nothing happens.
func consistentlyTrue(t *testing.T, d time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(d)
	for {
		ok, seen := cond(ctx)
		if !ok {
			t.Fatalf("want %s for %s; after %s: %s", what, d, (d - time.Until(deadline)).Round(100*time.Millisecond), seen)
		}
		if time.Now().After(deadline) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func podsOf(t *testing.T, ns string) []corev1.Pod {
	t.Helper()
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatalf("list pods of %s: %v", ns, err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items
}

// gateStatus is the Pod's InPlaceUpdateReady condition ("" if absent).
func gateOf(pod *corev1.Pod) corev1.ConditionStatus {
	for _, c := range pod.Status.Conditions {
		if c.Type == gateType {
			return c.Status
		}
	}
	return ""
}

func gated(pod *corev1.Pod) bool {
	for _, g := range pod.Spec.ReadinessGates {
		if g.ConditionType == gateType {
			return true
		}
	}
	return false
}

// settled reports whether the Pod runs image in container (spec and
// status), is Running and Ready, and, if it has refit's gate, has it True.
func settledOn(pod *corev1.Pod, container, image string) bool {
	cs := containerStatus(pod, container)
	if pod.DeletionTimestamp != nil || pod.Status.Phase != corev1.PodRunning || !podReady(pod) || cs == nil || cs.Image != image {
		return false
	}
	for _, c := range pod.Spec.Containers {
		if c.Name == container && c.Image != image {
			return false
		}
	}
	return !gated(pod) || gateOf(pod) == corev1.ConditionTrue
}

// waitSettled waits until the namespace has exactly n Pods, every one
// settled on image, and returns them; it fails naming the Pods that are not.
func waitSettled(t *testing.T, ns string, n int, container, image string, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		var off []string
		for i := range pods {
			if !settledOn(&pods[i], container, image) {
				off = append(off, pods[i].Name+": "+describePod(&pods[i])+" gate="+string(gateOf(&pods[i])))
			}
		}
		last = fmt.Sprintf("%d pods, %d not settled: %s", len(pods), len(off), strings.Join(off, "; "))
		return len(pods) == n && len(off) == 0, nil
	})
	if err != nil {
		t.Fatalf("namespace %s: want %d pods Ready on %s (gate True where gated) within %s; %s", ns, n, image, timeout, last)
	}
	return pods
}

// countPods counts the namespace's Pods for which pred holds.
func countPodsWhere(ctx context.Context, ns string, pred func(*corev1.Pod) bool) int {
	list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		return -1
	}
	n := 0
	for i := range list.Items {
		if pred(&list.Items[i]) {
			n++
		}
	}
	return n
}

func specImageOf(pod *corev1.Pod, container string) string {
	for _, c := range pod.Spec.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

// restarts sums the Pods' container restarts: a Pod patched in place
// restarts its container once.
func restartsOf(pods []corev1.Pod) map[string]int32 {
	m := map[string]int32{}
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			m[p.Name] += cs.RestartCount
		}
	}
	return m
}

// fleetCheck is what a rollout must have kept, from the watch started
// before it: the most Pods unavailable at once within bound, no Pod deleted,
// every Pod that was there before still there with its UID, and only
// extra new Pods (a scale-up) beyond them.
type fleetCheck struct {
	bound  int
	before []corev1.Pod
	after  []corev1.Pod
	extra  int
}

func assertFleet(t *testing.T, fw *fleetWatch, c fleetCheck) {
	t.Helper()
	maxUnavailable, nUIDs, deleted, _ := fw.summary()
	t.Logf("most pods unavailable at once: %d (bound %d); %d UIDs seen for %d pods before", maxUnavailable, c.bound, nUIDs, len(c.before))
	if maxUnavailable > c.bound {
		t.Errorf("%d pods unavailable at once, bound %d", maxUnavailable, c.bound)
	}
	if len(deleted) > 0 {
		t.Errorf("pods deleted: %v", deleted)
	}
	if nUIDs != len(c.before)+c.extra {
		t.Errorf("%d pod UIDs seen, want %d (%d pods and %d added): pods were recreated", nUIDs, len(c.before)+c.extra, len(c.before), c.extra)
	}
	now := map[string]types.UID{}
	for _, p := range c.after {
		now[p.Name] = p.UID
	}
	for _, p := range c.before {
		if now[p.Name] != p.UID {
			t.Errorf("pod %s: UID %s before, %q after: replaced", p.Name, p.UID, now[p.Name])
		}
	}
}

// assertRestartedOnce checks that each Pod of before runs image in
// container and restarted exactly once: patched in place, once.
func assertRestartedOnce(t *testing.T, before, after []corev1.Pod, container, image string) {
	t.Helper()
	old := uidsOf(before)
	for i := range after {
		p := &after[i]
		if _, ok := old[p.Name]; !ok {
			continue
		}
		cs := containerStatus(p, container)
		if cs == nil || cs.Image != image || cs.RestartCount != 1 {
			t.Errorf("pod %s: want %s after one in-place restart; %s", p.Name, image, describePod(p))
		}
	}
}

// waitPatched waits until at least n Pods of the namespace have image in
// container's spec: a rollout to image is under way.
func waitPatched(t *testing.T, ns, container, image string, n int, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("%d pods of %s patched to %s", n, ns, image), func(ctx context.Context) bool {
		return countPodsWhere(ctx, ns, func(p *corev1.Pod) bool { return specImageOf(p, container) == image }) >= n
	})
}

// rolloutRecord returns the workload's in-place rollout record, "" if none.
func rolloutRecord(t *testing.T, ns, kind, name string) string {
	t.Helper()
	var ann map[string]string
	var err error
	ctx := context.Background()
	switch kind {
	case "Deployment":
		var d *appsv1.Deployment
		if d, err = bed.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			ann = d.Annotations
		}
	case "StatefulSet":
		var s *appsv1.StatefulSet
		if s, err = bed.Client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			ann = s.Annotations
		}
	case "DaemonSet":
		var d *appsv1.DaemonSet
		if d, err = bed.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{}); err == nil {
			ann = d.Annotations
		}
	default:
		t.Fatalf("rolloutRecord: unexpected kind %s", kind)
	}
	if err != nil {
		t.Fatalf("get %s %s/%s: %v", kind, ns, name, err)
	}
	return ann[inplace.RolloutAnnotation]
}

// waitPDB waits until the disruption controller has counted the PDB's
// Pods, so its status is what refit reads.
func waitPDB(t *testing.T, ns, name string, expected int32) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("PDB %s/%s counting %d pods", ns, name, expected), func(ctx context.Context) bool {
		pdb, err := bed.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
		return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.ExpectedPods == expected &&
			pdb.Status.CurrentHealthy == expected
	})
}

// installPolicy creates cluster-scoped admission objects (policies and
// their bindings, bound to the test's namespace only) and deletes them when
// the test ends.
func installPolicy(t *testing.T, manifest string) {
	t.Helper()
	if out, err := kubectl([]byte(manifest), "apply", "-f", "-"); err != nil {
		t.Fatalf("install admission policy: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := kubectl([]byte(manifest), "delete", "--ignore-not-found", "-f", "-"); err != nil {
			t.Logf("delete admission policy: %v\n%s", err, out)
		}
	})
}

// dryRunImagePatch asks the API server to admit an image change of one Pod
// without writing it, as refit's admission check does; it returns the
// admitted image or the refusal.
func dryRunImagePatch(ctx context.Context, pod *corev1.Pod, container, image string) (string, error) {
	index := -1
	for i, c := range pod.Spec.Containers {
		if c.Name == container {
			index = i
		}
	}
	patch := fmt.Sprintf(`[{"op":"replace","path":"/spec/containers/%d/image","value":%q}]`, index, image)
	got, err := bed.Client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, []byte(patch),
		metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return "", err
	}
	return specImageOf(got, container), nil
}

// deploymentTemplates returns the images of the Deployment's template and
// of the templates of its ReplicaSets that have Pods, and whether it is
// paused.
func deploymentTemplates(t *testing.T, ns, name, container string) (deployment string, replicaSets []string, paused bool) {
	t.Helper()
	ctx := context.Background()
	d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, name, err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == container {
			deployment = c.Image
		}
	}
	rsList, err := bed.Client.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list replicasets of %s: %v", ns, err)
	}
	for _, rs := range rsList.Items {
		if rs.Spec.Replicas == nil || *rs.Spec.Replicas == 0 {
			continue
		}
		for _, c := range rs.Spec.Template.Spec.Containers {
			if c.Name == container {
				replicaSets = append(replicaSets, rs.Name+"="+c.Image)
			}
		}
	}
	return deployment, replicaSets, d.Spec.Paused
}

// waitReleased waits until refit has let go of the workload: no rollout
// record, the controller's own strategy back as Git has it (a Deployment
// unpaused with one ReplicaSet holding its Pods, a StatefulSet without a
// partition, a DaemonSet on RollingUpdate), and the controller counting
// all n Pods as updated to image.
func waitReleased(t *testing.T, ns, kind, name, container, image string, n int) {
	t.Helper()
	var seen string
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		switch kind {
		case "Deployment":
			d, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			dep, rs, paused := deploymentTemplates(t, ns, name, container)
			seen = fmt.Sprintf("paused=%v record=%q template=%s replicasets with pods=%v updated=%d available=%d",
				paused, d.Annotations[inplace.RolloutAnnotation], dep, rs, d.Status.UpdatedReplicas, d.Status.AvailableReplicas)
			return !paused && d.Annotations[inplace.RolloutAnnotation] == "" && dep == image &&
				len(rs) == 1 && strings.HasSuffix(rs[0], "="+image) &&
				d.Status.UpdatedReplicas == int32(n) && d.Status.AvailableReplicas == int32(n), nil
		case "StatefulSet":
			s, err := bed.Client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			var partition any = "none"
			if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
				partition = *ru.Partition
			}
			seen = fmt.Sprintf("partition=%v record=%q current=%s update=%s updated=%d ready=%d template=%s",
				partition, s.Annotations[inplace.RolloutAnnotation], s.Status.CurrentRevision, s.Status.UpdateRevision,
				s.Status.UpdatedReplicas, s.Status.ReadyReplicas, s.Spec.Template.Spec.Containers[0].Image)
			return (partition == "none" || partition == int32(0)) && s.Annotations[inplace.RolloutAnnotation] == "" &&
				s.Status.CurrentRevision == s.Status.UpdateRevision && s.Status.UpdatedReplicas == int32(n) &&
				s.Spec.Template.Spec.Containers[0].Image == image, nil
		case "DaemonSet":
			d, err := bed.Client.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			seen = fmt.Sprintf("strategy=%s record=%q updated=%d available=%d template=%s", d.Spec.UpdateStrategy.Type,
				d.Annotations[inplace.RolloutAnnotation], d.Status.UpdatedNumberScheduled, d.Status.NumberAvailable,
				d.Spec.Template.Spec.Containers[0].Image)
			return d.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType && d.Annotations[inplace.RolloutAnnotation] == "" &&
				d.Status.UpdatedNumberScheduled == int32(n) && d.Status.NumberAvailable == int32(n) &&
				d.Spec.Template.Spec.Containers[0].Image == image, nil
		}
		t.Fatalf("waitReleased: unexpected kind %s", kind)
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s %s/%s: want the hold released and %d pods counted as updated to %s; last seen: %s", kind, ns, name, n, image, seen)
	}
}

// kwokNodes is the number of kwok nodes: the Pods of a DaemonSet that
// selects them.
func kwokNodes(t *testing.T) int {
	t.Helper()
	nodes, err := bed.Client.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{LabelSelector: "refit.dev/node-type=kwok"})
	if err != nil {
		t.Fatal(err)
	}
	return len(nodes.Items)
}
