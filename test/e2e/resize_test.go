//go:build e2e

package e2e

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/cluster/kubeletsim"
)

// runningCPU is the CPU request the node reports a container running with.
func runningCPU(pod *corev1.Pod, container string) string {
	cs := containerStatus(pod, container)
	if cs == nil || cs.Resources == nil {
		return "unreported"
	}
	q := cs.Resources.Requests[corev1.ResourceCPU]
	return q.String()
}

func sameCPU(a, b string) bool {
	qa, errA := resource.ParseQuantity(a)
	qb, errB := resource.ParseQuantity(b)
	return errA == nil && errB == nil && qa.Cmp(qb) == 0
}

// assertResized checks, after a Succeeded resize of cpu from → to: the
// watch saw the same Pods (no deletion), none restarted, none unready;
// every Pod's spec and the node's status report the new CPU, and no
// resize condition is left.
func assertResized(t *testing.T, ns string, res inplace.Result, rep quietReport, before []corev1.Pod, n int, to string) {
	t.Helper()
	if res.Outcome != inplace.Succeeded || res.Updated != n {
		t.Fatalf("rollout: %s (%s), %d of %d updated; want Succeeded, %d", res.Outcome, res.Reason, res.Updated, res.Total, n)
	}
	if rep.uids != n || len(rep.deleted) > 0 || len(rep.restarted()) > 0 || rep.maxUnavailable > 0 {
		t.Errorf("watch: %d UIDs (want %d), deleted %v, restarted %v, most unready at once %d (want 0)", rep.uids, n, rep.deleted, rep.restarted(), rep.maxUnavailable)
	}
	now := podsOf(t, ns)
	sameUIDs(t, before, now)
	for _, pod := range now {
		spec := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]
		if !sameCPU(spec.String(), to) || !sameCPU(runningCPU(&pod, "app"), to) {
			t.Errorf("pod %s: cpu request spec %s, status %s; want %s", pod.Name, spec.String(), runningCPU(&pod, "app"), to)
		}
		for _, c := range pod.Status.Conditions {
			if c.Type == corev1.PodResizePending || c.Type == corev1.PodResizeInProgress {
				t.Errorf("pod %s: condition %s %s left", pod.Name, c.Type, c.Reason)
			}
		}
	}
}

// TestInPlaceResizeOnHollowKubelet: a CPU request change goes to Pods on
// the real kubelet (kubemark's hollow node) through pods/resize, and
// refit's outcome must agree with the kubelet's evidence. Where the kubelet
// actuates the resize (status resources at the target), the rollout
// succeeds with no restart and no Pod unready. Where it cannot (kubemark
// without Pod cgroups: the kubelet allocates the new request, then reports
// PodResizeInProgress with its error), refit must not take the accepted
// spec for done: the rollout fails at its progress deadline naming the
// kubelet's condition, after one Pod (the window of quiet updates).
// Either way no container restarts or goes unready (from a watch).
func TestInPlaceResizeOnHollowKubelet(t *testing.T) {
	ns := namespace(t)
	const manifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: real, annotations: {refit.dev/progress-deadline: 8s}}
spec:
  replicas: 2
  selector: {matchLabels: {app: real}}
  template:
    metadata: {labels: {app: real}}
    spec:
      nodeSelector: {kubernetes.io/hostname: hollow-node-0}
      tolerations: [{key: refit.dev/hollow, operator: Exists}]
      containers:
      - name: app
        image: "nginx:1.27"
        resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {memory: 64Mi}}`
	after := strings.Replace(manifest, "cpu: 10m", "cpu: 20m", 1)
	res, rep, before := rollInPlace(t, ns, manifest, after, 2, diff.AspectResources)
	now := podsOf(t, ns)
	actuated := 0
	for _, pod := range now {
		if sameCPU(runningCPU(&pod, "app"), "20m") {
			actuated++
		}
	}
	t.Logf("the hollow kubelet actuated %d resizes; refit: %s %s", actuated, res.Outcome, res.Reason)
	if actuated > 0 {
		assertResized(t, ns, res, rep, before, 2, "20m")
		return
	}
	if res.Outcome != inplace.Failed || !strings.Contains(res.Reason, "progress deadline") || !strings.Contains(res.Reason, string(corev1.PodResizeInProgress)) {
		t.Fatalf("rollout: %s (%s); the kubelet actuated no resize: want Failed at the progress deadline, naming its %s", res.Outcome, res.Reason, corev1.PodResizeInProgress)
	}
	if rep.uids != 2 || len(rep.deleted) > 0 || len(rep.restarted()) > 0 || rep.maxUnavailable > 0 {
		t.Errorf("watch: %d UIDs (want 2), deleted %v, restarted %v, most unready at once %d (want 0)", rep.uids, rep.deleted, rep.restarted(), rep.maxUnavailable)
	}
	sameUIDs(t, before, now)
	resized := 0
	for _, pod := range now {
		spec := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]
		if !sameCPU(spec.String(), "20m") {
			continue
		}
		resized++
		cs := containerStatus(&pod, "app")
		allocated := cs.AllocatedResources[corev1.ResourceCPU]
		if !sameCPU(allocated.String(), "20m") {
			t.Errorf("pod %s: allocated %s; want the kubelet to have accepted 20m", pod.Name, allocated.String())
		}
	}
	if resized != 1 {
		t.Errorf("%d Pods resized; want 1 (one quiet update in flight, none after it stalled)", resized)
	}
}

// resizeNode adds a kwok node of the test's own with the given allocatable
// CPU, tainted so that only the test's Pods (which tolerate it) land there,
// with the given annotations, and removes it afterwards. It returns its name.
func resizeNode(t *testing.T, cpu string, annotations map[string]string) string {
	t.Helper()
	node := cluster.KwokNode("resize-"+rand.String(6), 20)
	for k, v := range annotations {
		node.Annotations[k] = v
	}
	node.Status.Capacity[corev1.ResourceCPU] = resource.MustParse(cpu)
	node.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(cpu)
	node.Spec.Taints = []corev1.Taint{{Key: "refit.dev/resize-test", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	return addNodes(t, node)[0]
}

// TestInPlaceResizeWithoutRestart: a CPU request change of a Deployment of
// 4 goes through pods/resize on the kwok nodes: same UIDs, restart counts
// unchanged and no Pod unready (from a watch), the node's status reports
// the new request, no resize condition left, and the one ReplicaSet's
// template asks for it too.
func TestInPlaceResizeWithoutRestart(t *testing.T) {
	ns := namespace(t)
	const manifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: "nginx:1.27"
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}`
	res, rep, before := rollInPlace(t, ns, manifest, strings.Replace(manifest, "cpu: 100m", "cpu: 200m", 1), 4, diff.AspectResources)
	assertResized(t, ns, res, rep, before, 4, "200m")
	rsList, err := bed.Client.AppsV1().ReplicaSets(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rsList.Items) != 1 {
		t.Fatalf("%d ReplicaSets; want the one, its template updated", len(rsList.Items))
	}
	cpu := rsList.Items[0].Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]
	if !sameCPU(cpu.String(), "200m") {
		t.Errorf("ReplicaSet template cpu %s; want 200m (the template consistent with what runs)", cpu.String())
	}
}

// TestInPlaceImageAndResizeWithRestart: an image and a CPU request in one
// commit, with a resizePolicy that restarts for CPU: one rollout, each Pod
// taken once (its resize and its image patch in one step, one state), the
// Pods restarted within maxUnavailable 1 (from a watch), same UIDs, the new
// image and the new request reported.
func TestInPlaceImageAndResizeWithRestart(t *testing.T) {
	ns := namespace(t)
	const manifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 4
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: "nginx:1.27"
        resizePolicy: [{resourceName: cpu, restartPolicy: RestartContainer}]
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}`
	after := strings.NewReplacer("cpu: 100m", "cpu: 200m", `"nginx:1.27"`, `"nginx:1.28"`).Replace(manifest)
	res, rep, before := rollInPlace(t, ns, manifest, after, 4, diff.AspectImage, diff.AspectResources)
	if res.Outcome != inplace.Succeeded || res.Updated != 4 {
		t.Fatalf("rollout: %s (%s), %d of %d updated; want Succeeded, 4", res.Outcome, res.Reason, res.Updated, res.Total)
	}
	if rep.uids != 4 || len(rep.deleted) > 0 || rep.maxUnavailable > 1 {
		t.Errorf("watch: %d UIDs (want 4), deleted %v, most unready at once %d (bound 1)", rep.uids, rep.deleted, rep.maxUnavailable)
	}
	t.Logf("restarts seen per container: %v", rep.restarted())
	now := podsOf(t, ns)
	sameUIDs(t, before, now)
	for _, pod := range now {
		cs := containerStatus(&pod, "app")
		if cs == nil || !settledOn(&pod, "app", "nginx:1.28") || !sameCPU(runningCPU(&pod, "app"), "200m") || rep.restarts[pod.Name+"/app"] < 1 {
			t.Errorf("pod %s: want nginx:1.28 running with cpu 200m, restarted; got %s, cpu %s", pod.Name, describePod(&pod), runningCPU(&pod, "app"))
		}
		state, ok := inplace.ReadState(&pod)
		if !ok || len(state.Containers) != 1 || !state.Resized["app"].Restart {
			t.Errorf("pod %s: state %s; want one step recording both the image and the resize (with its restart)", pod.Name, pod.Annotations[inplace.StateAnnotation])
		}
	}
}

// TestInPlaceResizeThatDoesNotFit: on a node of 1 CPU with two Pods of
// 400m, a resize to 2 CPUs is refused by the API server (beyond the node's
// allocatable): the dry-run finds it, nothing is touched, the change goes
// the ordinary way (Fallback). A resize to 700m is allowed but does not fit
// beside the other Pod: the node defers it, and past the progress deadline
// the rollout stops (Failed, naming the node's reason) after the one Pod;
// that Pod keeps running with its old request, nothing restarted, the
// workload stays held (its rollout record) for a new commit to re-target.
func TestInPlaceResizeThatDoesNotFit(t *testing.T) {
	ns := namespace(t)
	node := resizeNode(t, "1", nil)
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata: {name: tight, annotations: {refit.dev/progress-deadline: 5s}}
spec:
  replicas: 2
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: tight}}
  template:
    metadata: {labels: {app: tight}}
    spec:
      nodeSelector: {kubernetes.io/hostname: ` + node + `}
      tolerations: [{key: refit.dev/resize-test, operator: Exists}]
      containers:
      - name: app
        image: "nginx:1.27"
        resources: {requests: {cpu: 400m, memory: 64Mi}, limits: {memory: 128Mi}}`
	base := parseObjects(t, manifest)
	applyForTest(t, ns, base)
	before := waitReadyPods(t, ns, 2, &base[0])

	huge := plan(t, ns, parseObjects(t, strings.Replace(manifest, "cpu: 400m", "cpu: 2", 1))).Changes[0]
	fallback, err := newEngine(t).Rollout(t.Context(), huge, inplace.DefaultOptions())
	if err != nil || fallback.Outcome != inplace.Fallback || !strings.Contains(fallback.Reason, "refuses the resize") {
		t.Fatalf("resize beyond the node: %s (%s), %v; want Fallback, the API server refusing the resize", fallback.Outcome, fallback.Reason, err)
	}
	t.Logf("resize beyond the node: %s", fallback.Reason)
	for _, pod := range podsOf(t, ns) {
		if cpu := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; !sameCPU(cpu.String(), "400m") {
			t.Errorf("pod %s: cpu %s after a Fallback; want it untouched", pod.Name, cpu.String())
		}
	}

	res, rep, _ := rollInPlace(t, ns, manifest, strings.Replace(manifest, "cpu: 400m", "cpu: 700m", 1), 2, diff.AspectResources)
	if res.Outcome != inplace.Failed || !strings.Contains(res.Reason, corev1.PodReasonDeferred) {
		t.Fatalf("rollout: %s (%s); want Failed, naming the node's %s", res.Outcome, res.Reason, corev1.PodReasonDeferred)
	}
	if rep.uids != 2 || len(rep.deleted) > 0 || len(rep.restarted()) > 0 || rep.maxUnavailable > 0 {
		t.Errorf("watch: %d UIDs (want 2), deleted %v, restarted %v, most unready at once %d (want 0)", rep.uids, rep.deleted, rep.restarted(), rep.maxUnavailable)
	}
	now := podsOf(t, ns)
	sameUIDs(t, before, now)
	asked := 0
	for _, pod := range now {
		if cpu := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; sameCPU(cpu.String(), "700m") {
			asked++
		}
		if !sameCPU(runningCPU(&pod, "app"), "400m") {
			t.Errorf("pod %s runs with cpu %s; want its old 400m (the node deferred the resize)", pod.Name, runningCPU(&pod, "app"))
		}
	}
	if asked != 1 {
		t.Errorf("%d Pods asked for 700m; want 1 (the rollout stops at the first)", asked)
	}
	if _, held, err := recordOf(t.Context(), ns, "Deployment", "tight"); err != nil || !held {
		t.Errorf("rollout record on the Deployment: %v, %v; want it kept (held for a new commit)", held, err)
	}
}

// TestInPlaceStatefulSetResizeAndMetadata: a StatefulSet's CPU request and
// a template annotation in one commit, neither restarting anything: the
// Pods keep their UIDs, none restarts or goes unready (from a watch), each
// carries the new annotation, the new request in its status and the new
// revision label, and once refit lets go the controller counts every Pod
// as updated (no Pod recreated to catch up).
func TestInPlaceStatefulSetResizeAndMetadata(t *testing.T) {
	ns := namespace(t)
	const manifest = `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  replicas: 3
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}, annotations: {backup: daily}}
    spec:
      containers:
      - name: app
        image: "nginx:1.27"
        resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {memory: 128Mi}}`
	after := strings.NewReplacer("cpu: 100m", "cpu: 300m", "backup: daily", "backup: hourly").Replace(manifest)
	res, rep, before := rollInPlace(t, ns, manifest, after, 3, diff.AspectResources, diff.AspectMetadata)
	assertResized(t, ns, res, rep, before, 3, "300m")
	sts := waitStatefulSetSettled(t, ns, "db", 3, 0)
	settled := podsOf(t, ns)
	sameUIDs(t, before, settled)
	for _, pod := range settled {
		if pod.Annotations["backup"] != "hourly" || pod.Labels["controller-revision-hash"] != sts.Status.UpdateRevision {
			t.Errorf("pod %s: annotation backup=%q, revision %q; want hourly and %s", pod.Name, pod.Annotations["backup"], pod.Labels["controller-revision-hash"], sts.Status.UpdateRevision)
		}
	}
}

// TestInPlaceResizeInfeasibleStopsAtOnce: a Guaranteed Pod on a node whose
// CPU manager is static cannot be resized (the kubelet says Infeasible):
// the rollout stops at once, long before its progress deadline, naming the
// node's reason, after one Pod; nothing restarted, no Pod unready.
func TestInPlaceResizeInfeasibleStopsAtOnce(t *testing.T) {
	ns := namespace(t)
	node := resizeNode(t, "8", map[string]string{kubeletsim.CPUManagerPolicyAnnotation: "static"})
	manifest := `apiVersion: apps/v1
kind: Deployment
metadata: {name: pinned, annotations: {refit.dev/progress-deadline: 2m}}
spec:
  replicas: 2
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: pinned}}
  template:
    metadata: {labels: {app: pinned}}
    spec:
      nodeSelector: {kubernetes.io/hostname: ` + node + `}
      tolerations: [{key: refit.dev/resize-test, operator: Exists}]
      containers:
      - name: app
        image: "nginx:1.27"
        resources: {requests: {cpu: "1", memory: 64Mi}, limits: {cpu: "1", memory: 64Mi}}`
	after := strings.ReplaceAll(manifest, `cpu: "1"`, `cpu: "2"`)
	res, rep, before := rollInPlace(t, ns, manifest, after, 2, diff.AspectResources)
	if res.Outcome != inplace.Failed || !strings.Contains(res.Reason, corev1.PodReasonInfeasible) || res.Duration > 30*time.Second {
		t.Fatalf("rollout: %s in %s (%s); want Failed at once (deadline 2m), naming the node's %s", res.Outcome, res.Duration, res.Reason, corev1.PodReasonInfeasible)
	}
	if rep.uids != 2 || len(rep.deleted) > 0 || len(rep.restarted()) > 0 || rep.maxUnavailable > 0 {
		t.Errorf("watch: %d UIDs (want 2), deleted %v, restarted %v, most unready at once %d (want 0)", rep.uids, rep.deleted, rep.restarted(), rep.maxUnavailable)
	}
	now := podsOf(t, ns)
	sameUIDs(t, before, now)
	asked := 0
	for _, pod := range now {
		if cpu := pod.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; sameCPU(cpu.String(), "2") {
			asked++
		}
	}
	if asked != 1 {
		t.Errorf("%d Pods asked for 2 CPUs; want 1 (the rollout stops at the first)", asked)
	}
}
