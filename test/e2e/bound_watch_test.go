//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/util/retry"

	"github.com/refit-gitops/refit/inplace"
)

// Helpers of the adversity tests: a watch that bounds the unavailability of
// groups of Pods (workloads, PDBs, DaemonSet nodes) and records every Pod
// created, deleted or patched; refit run as a separate process; waits.

// podGroup is a set of Pods whose unavailability is bounded: one workload's,
// or a PodDisruptionBudget's. Unavailable counts the Pods the group should
// have and has not available (not Ready, being deleted, or missing), as the
// workload controllers and the disruption controller count them.
type podGroup struct {
	name     string
	selector labels.Selector
	want     int // Pods (or, perNode, nodes) the group should have
	bound    int
	// perNode counts nodes instead of Pods, as the DaemonSet controller
	// does: a node that should run a Pod and has no available one is
	// unavailable.
	perNode bool

	worst   int
	worstAt string
	worstIx int // index of the worst event in the watch's trace
	last    int // unavailable after the latest event
	overs   int // times it went over the bound
}

// groupOf is a group of want Pods matching selector (a label selector in
// kubectl's syntax) of which at most bound may be unavailable.
func groupOf(t *testing.T, name, selector string, want, bound int) *podGroup {
	t.Helper()
	sel, err := labels.Parse(selector)
	if err != nil {
		t.Fatalf("group %s: selector %q: %v", name, selector, err)
	}
	return &podGroup{name: name, selector: sel, want: want, bound: bound}
}

// boundWatch follows every Pod of a namespace from a watch, from a listing
// on: per group the most unavailable at once, and per Pod what happened to
// it (created, deleted, taken down while not being deleted, its images
// changed in place).
type boundWatch struct {
	w    watch.Interface
	done chan struct{}

	mu      sync.Mutex
	groups  []*podGroup
	pods    map[types.UID]*corev1.Pod // the latest state of every Pod not yet deleted
	first   map[types.UID]*corev1.Pod // as first seen
	created []string                  // Pods first seen after the listing
	deleted map[types.UID]string      // Pods being deleted or gone
	downed  map[string]bool           // Ready, then not Ready without being deleted
	events  int
	trace   []string // one line per event, to show what led to a violation
}

func watchBound(t *testing.T, ns string, groups ...*podGroup) *boundWatch {
	t.Helper()
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		t.Fatalf("list pods of %s: %v", ns, err)
	}
	bw := &boundWatch{done: make(chan struct{}), groups: groups, pods: map[types.UID]*corev1.Pod{},
		first: map[types.UID]*corev1.Pod{}, deleted: map[types.UID]string{}, downed: map[string]bool{}}
	// The listing is the starting point, not a sequence of events: the
	// groups are measured once it is all in.
	for i := range list.Items {
		bw.first[list.Items[i].UID] = &list.Items[i]
		bw.pods[list.Items[i].UID] = &list.Items[i]
	}
	for _, g := range bw.groups {
		g.worst = bw.unavailableLocked(g)
		g.worstAt, g.last = "when the watch started", g.worst
		if g.worst > g.bound {
			g.overs = 1
		}
	}
	bw.w, err = bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: notPrePull, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatalf("watch pods of %s: %v", ns, err)
	}
	go func() {
		defer close(bw.done)
		for ev := range bw.w.ResultChan() {
			if pod, ok := ev.Object.(*corev1.Pod); ok {
				bw.observe(ev.Type, pod)
			}
		}
	}()
	t.Cleanup(bw.stop)
	return bw
}

func (bw *boundWatch) observe(typ watch.EventType, pod *corev1.Pod) {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	bw.events++
	prev, known := bw.pods[pod.UID]
	if _, seen := bw.first[pod.UID]; !seen {
		bw.first[pod.UID] = pod
		bw.created = append(bw.created, pod.Name)
	}
	switch {
	case typ == watch.Deleted:
		delete(bw.pods, pod.UID)
		bw.deleted[pod.UID] = pod.Name
	default:
		if pod.DeletionTimestamp != nil {
			bw.deleted[pod.UID] = pod.Name
		}
		if known && podReady(prev) && !podReady(pod) && pod.DeletionTimestamp == nil {
			bw.downed[pod.Name] = true
		}
		bw.pods[pod.UID] = pod
	}
	now := time.Now().Format("15:04:05.000")
	line := fmt.Sprintf("%s %-8s %s ready=%v deleting=%v %s", now, typ, pod.Name, podReady(pod), pod.DeletionTimestamp != nil, imagesOf(pod))
	for _, g := range bw.groups {
		n := bw.unavailableLocked(g)
		line += fmt.Sprintf(" | %s: %d", g.name, n)
		if n > g.worst {
			g.worst = n
			g.worstAt = fmt.Sprintf("%s %s", now, pod.Name)
			g.worstIx = len(bw.trace)
		}
		if n > g.bound && g.last <= g.bound {
			g.overs++
		}
		g.last = n
	}
	bw.trace = append(bw.trace, line)
}

// unavailableLocked is what the group is short of available Pods (or nodes).
func (bw *boundWatch) unavailableLocked(g *podGroup) int {
	available, nodes := 0, map[string]bool{}
	for _, p := range bw.pods {
		if p.DeletionTimestamp != nil || !podReady(p) || !g.selector.Matches(labels.Set(p.Labels)) {
			continue
		}
		if g.perNode {
			nodes[p.Spec.NodeName] = true
		} else {
			available++
		}
	}
	if g.perNode {
		available = len(nodes)
	}
	return max(g.want-available, 0)
}

// sawDeleted reports whether the watch has seen the Pod uid being deleted.
func (bw *boundWatch) sawDeleted(uid types.UID) bool {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	_, ok := bw.deleted[uid]
	return ok
}

// current is what the named group is short of now.
func (bw *boundWatch) current(name string) int {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	for _, g := range bw.groups {
		if g.name == name {
			return g.last
		}
	}
	return -1
}

// rebound gives a group a new size and bound (a scale), and restarts its
// worst count from what is unavailable now.
func (bw *boundWatch) rebound(name string, want, bound int) {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	for _, g := range bw.groups {
		if g.name == name {
			g.want, g.bound = want, bound
			g.worst, g.worstAt, g.worstIx = bw.unavailableLocked(g), "at the rebound", max(len(bw.trace)-1, 0)
			g.last, g.overs = g.worst, 0
			if g.worst > g.bound {
				g.overs = 1
			}
		}
	}
}

func (bw *boundWatch) stop() {
	if bw.w != nil {
		bw.w.Stop()
		<-bw.done
		bw.w = nil
	}
}

// boundReport is what a boundWatch saw.
type boundReport struct {
	groups  []podGroup
	created []string
	deleted []string
	downed  []string
	// patched are Pods (same UID) whose container images changed.
	patched []string
	events  int
	trace   []string
}

func (bw *boundWatch) report() boundReport {
	bw.stop()
	bw.mu.Lock()
	defer bw.mu.Unlock()
	r := boundReport{created: bw.created, events: bw.events, trace: bw.trace}
	for _, name := range bw.deleted {
		r.deleted = append(r.deleted, name)
	}
	sort.Strings(r.deleted)
	for _, g := range bw.groups {
		r.groups = append(r.groups, *g)
	}
	for name := range bw.downed {
		r.downed = append(r.downed, name)
	}
	sort.Strings(r.downed)
	for uid, p := range bw.pods {
		if f := bw.first[uid]; imagesOf(f) != imagesOf(p) {
			r.patched = append(r.patched, p.Name)
		}
	}
	sort.Strings(r.patched)
	return r
}

// assertBounds fails for every group whose worst exceeded its bound.
func (r boundReport) assertBounds(t *testing.T) {
	t.Helper()
	for _, g := range r.groups {
		t.Logf("%s: at most %d unavailable at once (bound %d)", g.name, g.worst, g.bound)
		if g.worst > g.bound {
			from := max(g.worstIx-30, 0)
			t.Errorf("%s: %d unavailable at once (%s), bound %d; over the bound %d times; the events up to the worst:\n%s",
				g.name, g.worst, g.worstAt, g.bound, g.overs, strings.Join(r.trace[from:min(g.worstIx+1, len(r.trace))], "\n"))
		}
	}
}

// assertNoneReplaced fails if a Pod was created or deleted while watched.
func (r boundReport) assertNoneReplaced(t *testing.T) {
	t.Helper()
	if len(r.created) > 0 || len(r.deleted) > 0 {
		t.Errorf("pods replaced: created %v, deleted %v; want every Pod updated in place", r.created, r.deleted)
	}
}

func imagesOf(pod *corev1.Pod) string {
	var b strings.Builder
	for _, c := range pod.Spec.InitContainers {
		fmt.Fprintf(&b, "%s=%s ", c.Name, c.Image)
	}
	for _, c := range pod.Spec.Containers {
		fmt.Fprintf(&b, "%s=%s ", c.Name, c.Image)
	}
	return b.String()
}

// refitProc is a `refit apply` running in the background, for a test that
// acts while it runs or kills it.
type refitProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// startApply starts `refit apply` of dir for the app named after the
// namespace. It is killed when the test ends.
func startApply(t *testing.T, ns, dir string, extra ...string) *refitProc {
	t.Helper()
	args := append([]string{"apply", "--dir", dir, "--app", ns, "--wait", "--kubeconfig", bed.Kubeconfig, "-n", ns}, extra...)
	p := &refitProc{cmd: exec.Command(refit(t), args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start refit apply: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

// kill SIGKILLs the process if it still runs and reports whether it did.
func (p *refitProc) kill() bool {
	select {
	case <-p.done:
		return false
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	return true
}

// exited reports whether the process has ended.
func (p *refitProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// finish waits for the process to exit and returns its output and exit code.
func (p *refitProc) finish(t *testing.T, timeout time.Duration) (string, int) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
		t.Fatalf("refit apply still running after %s; output:\n%s", timeout, p.out.String())
	}
	return p.out.String(), p.cmd.ProcessState.ExitCode()
}

// applyDir runs `refit apply --wait` of dir to its end.
func applyDir(t *testing.T, ns, dir string, extra ...string) (string, int) {
	t.Helper()
	return runRefitCLI(t, ns, append([]string{"apply", "--dir", dir, "--app", ns, "--wait"}, extra...)...)
}

// mustApplyDir applies dir and fails the test unless refit exits 0.
func mustApplyDir(t *testing.T, ns, dir string, extra ...string) string {
	t.Helper()
	out, code := applyDir(t, ns, dir, extra...)
	if code != 0 {
		t.Fatalf("refit apply: exit %d\n%s", code, out)
	}
	return out
}

// waitUntil polls cond until it holds, failing with what was expected and
// the last thing seen.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		ok, seen := cond(ctx)
		if seen != "" {
			last = seen // a poll cut short by the deadline says nothing
		}
		return ok, nil
	})
	if err != nil {
		t.Fatalf("want %s within %s; last seen: %s", what, timeout, last)
	}
}

// livePods lists the namespace's Pods that are not being deleted, by name.
// An error (a poll's deadline, an API hiccup) is an empty list: the callers
// poll, and fail with what they last saw.
func livePods(ctx context.Context, t *testing.T, ns, selector string) []corev1.Pod {
	t.Helper()
	if selector != "" {
		selector += ","
	}
	list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector + notPrePull})
	if err != nil {
		t.Logf("list pods of %s: %v", ns, err)
		return nil
	}
	out := []corev1.Pod{}
	for _, p := range list.Items {
		if p.DeletionTimestamp == nil {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// waitOnImage waits until exactly n Pods matching selector run image in
// container (spec and status), Running and Ready, and returns them.
func waitOnImage(t *testing.T, ns, selector string, n int, container, image string, timeout time.Duration) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitUntil(t, timeout, fmt.Sprintf("%d pods (%s) Ready on %s", n, selector, image), func(ctx context.Context) (bool, string) {
		pods = livePods(ctx, t, ns, selector)
		if pods == nil {
			return false, ""
		}
		var off []string
		for i := range pods {
			cs := containerStatus(&pods[i], container)
			if !podReady(&pods[i]) || cs == nil || cs.Image != image || specOf(&pods[i], container) != image {
				off = append(off, pods[i].Name+": "+describePod(&pods[i]))
			}
		}
		return len(pods) == n && len(off) == 0, fmt.Sprintf("%d pods; not there: %s", len(pods), strings.Join(off, "; "))
	})
	return pods
}

func specOf(pod *corev1.Pod, container string) string {
	for _, c := range pod.Spec.Containers {
		if c.Name == container {
			return c.Image
		}
	}
	return ""
}

// stateAnnotated counts the Pods carrying refit's in-place state.
func stateAnnotated(pods []corev1.Pod) int {
	n := 0
	for _, p := range pods {
		if _, ok := p.Annotations[inplace.StateAnnotation]; ok {
			n++
		}
	}
	return n
}

// recordOf returns refit's rollout record on a live workload, if any.
func recordOf(ctx context.Context, ns, kind, name string) (string, bool, error) {
	gvr, _ := resourceOf(kind)
	obj, err := dynamic.NewForConfigOrDie(bed.Config).Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return "", false, fmt.Errorf("get %s %s: %w", kind, name, err)
	}
	v, ok := obj.GetAnnotations()[inplace.RolloutAnnotation]
	return v, ok, nil
}

// noRecordLeft fails if the workload still carries refit's rollout record.
func noRecordLeft(t *testing.T, ns, kind, name string) {
	t.Helper()
	v, ok, err := recordOf(context.Background(), ns, kind, name)
	if err != nil {
		t.Fatal(err)
	}
	if ok {
		t.Errorf("%s %s: rollout record left behind: %s", kind, name, v)
	}
}

// waitStatefulSetSettled waits until the StatefulSet controller counts
// updated Pods as Git says it should, with partition back to Git's.
func waitStatefulSetSettled(t *testing.T, ns, name string, updated int32, partition int32) *appsv1.StatefulSet {
	t.Helper()
	var sts *appsv1.StatefulSet
	waitUntil(t, 30*time.Second, fmt.Sprintf("statefulset %s: %d updated Pods, partition %d", name, updated, partition), func(ctx context.Context) (bool, string) {
		s, err := bed.Client.AppsV1().StatefulSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		sts = s
		p := int32(0)
		if ru := s.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
			p = *ru.Partition
		}
		return s.Status.ObservedGeneration >= s.Generation && s.Status.UpdatedReplicas == updated && p == partition,
			fmt.Sprintf("partition %d, updated %d, current %s, update %s", p, s.Status.UpdatedReplicas, s.Status.CurrentRevision, s.Status.UpdateRevision)
	})
	return sts
}

// setContainersReady writes the Pod's container readiness as a kubelet
// whose readiness probe changed its mind would; the bed recomputes Ready.
func setContainersReady(t *testing.T, ns, name string, ready bool) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := bed.Client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for i := range pod.Status.ContainerStatuses {
			pod.Status.ContainerStatuses[i].Ready = ready
		}
		_, err = bed.Client.CoreV1().Pods(ns).UpdateStatus(context.Background(), pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("pod %s/%s: set containers ready=%v: %v", ns, name, ready, err)
	}
}

// waitPodsWhere waits until exactly n Pods matching selector (not being
// deleted) satisfy ok, and returns them.
func waitPodsWhere(t *testing.T, ns, selector string, n int, timeout time.Duration, what string, ok func(*corev1.Pod) bool) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	waitUntil(t, timeout, fmt.Sprintf("%d pods (%s) %s", n, selector, what), func(ctx context.Context) (bool, string) {
		pods = livePods(ctx, t, ns, selector)
		if pods == nil {
			return false, ""
		}
		var off []string
		for i := range pods {
			if !ok(&pods[i]) {
				off = append(off, pods[i].Name+": "+describePod(&pods[i]))
			}
		}
		return len(pods) == n && len(off) == 0, fmt.Sprintf("%d pods; not there: %s", len(pods), strings.Join(off, "; "))
	})
	return pods
}

// sameUIDs fails for every Pod of after whose UID is not the one it had in
// before.
func sameUIDs(t *testing.T, before, after []corev1.Pod) {
	t.Helper()
	old := uidsOf(before)
	for _, p := range after {
		if old[p.Name] != p.UID {
			t.Errorf("pod %s: UID %s, was %q: recreated", p.Name, p.UID, old[p.Name])
		}
	}
}

// assertPlanLine runs `refit plan` and checks the line of one object.
func assertPlanLine(t *testing.T, ns, dir, object string, want, notWant string) {
	t.Helper()
	out, code := runRefitCLI(t, ns, "plan", "--dir", dir, "--app", ns)
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, object) {
			line = l
		}
	}
	if code != 2 || !strings.Contains(line, want) || notWant != "" && strings.Contains(line, notWant) {
		t.Errorf("refit plan: exit %d, %s: want %q%s; got %q\n%s", code, object, want,
			map[bool]string{true: " and not " + fmt.Sprintf("%q", notWant)}[notWant != ""], line, out)
	}
}
