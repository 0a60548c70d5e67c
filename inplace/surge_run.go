package inplace

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/diff"
)

// surgeSpec is a workload's surge: set by precheck when its bound is 0 and
// maxSurge is not.
type surgeSpec struct {
	max     int
	perNode bool
	// key is the workload's UID, the value of SurgeLabel.
	key types.UID
	// prefix starts the extra Pods' names.
	prefix string
	// owner controls the extra Pods; nil: the original Pod each stands in for.
	owner *metav1.OwnerReference
}

// surger is a workload kind that can keep its bound of 0 with extra Pods.
type surger interface {
	extraPods() *surgeSpec
}

func surgeOf(w workload) *surgeSpec {
	if s, ok := w.(surger); ok {
		return s.extraPods()
	}
	return nil
}

// surgeState is the surge side of one run: its writes the Pod cache may not
// show yet, so that a pass right after one does not write them again.
type surgeState struct {
	spec     *surgeSpec
	tmpl     *corev1.PodTemplateSpec
	deadline time.Duration
	extras   func() []*corev1.Pod
	created  map[string]SurgeExtra
	deleted  map[string]bool
}

// createdGrace is how long an extra Pod this run created counts without the
// cache showing it.
const createdGrace = 10 * time.Second

// surgeStep is what a pass takes from the surge decision.
type surgeStep struct {
	window  int
	allowed func(*corev1.Pod) bool
	stuck   string
	reason  string
}

// newSurgeState returns nil for a workload without a surge.
func newSurgeState(w workload, desired *unstructured.Unstructured) (*surgeState, error) {
	spec := surgeOf(w)
	if spec == nil {
		return nil, nil
	}
	tmpl, err := templateOf(desired)
	if err != nil {
		return nil, err
	}
	deadline, err := surgeDeadline(desired)
	if err != nil {
		return nil, err
	}
	return &surgeState{spec: spec, tmpl: tmpl, deadline: deadline, created: map[string]SurgeExtra{}, deleted: map[string]bool{}}, nil
}

func templateOf(desired *unstructured.Unstructured) (*corev1.PodTemplateSpec, error) {
	raw, _, err := unstructured.NestedMap(desired.Object, "spec", "template")
	if err != nil {
		return nil, fmt.Errorf("%s/%s: template: %w", desired.GetKind(), desired.GetName(), err)
	}
	var tmpl corev1.PodTemplateSpec
	if err := fromUnstructured(&unstructured.Unstructured{Object: raw}, &tmpl); err != nil {
		return nil, fmt.Errorf("%s/%s: template: %w", desired.GetKind(), desired.GetName(), err)
	}
	return &tmpl, nil
}

func surgeDeadline(desired *unstructured.Unstructured) (time.Duration, error) {
	v, ok := desired.GetAnnotations()[SurgeDeadlineAnnotation]
	if !ok {
		return DefaultSurgeDeadline, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a duration (30s)", SurgeDeadlineAnnotation, v)
	}
	return d, nil
}

func isExtraOf(pod *corev1.Pod, key types.UID) bool {
	return pod.Labels[SurgeLabel] == string(key)
}

// extraOf describes an extra Pod for PlanSurge.
func extraOf(pod *corev1.Pod, minReadySeconds int32, now time.Time) SurgeExtra {
	x := SurgeExtra{Name: pod.Name, Node: pod.Spec.NodeName, Created: pod.CreationTimestamp.Time,
		Scheduled: pod.Spec.NodeName != "", Available: PodAvailable(pod, minReadySeconds, now), Deleting: pod.DeletionTimestamp != nil}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			x.Unschedulable = c.Message
		}
	}
	for _, list := range [][]corev1.ContainerStatus{pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses} {
		for _, cs := range list {
			if w := cs.State.Waiting; w != nil && failureReasons[w.Reason] && x.Failure == "" {
				x.Failure = fmt.Sprintf("container %s: %s: %s", cs.Name, w.Reason, w.Message)
			}
		}
	}
	return x
}

// originalOf describes one of the workload's Pods for PlanSurge, as Assess
// sees it: a Pod refit patched counts as down from the patch on.
func (r *run) originalOf(pod *corev1.Pod, now time.Time) SurgeOriginal {
	state := r.states.get(pod)
	phase, _ := podPhase(pod, state, r.target, r.w.record().ID, now, 0)
	ready := PodAvailable(pod, r.w.minReadySeconds(), now) && !r.pending[pod.UID]
	return SurgeOriginal{Name: pod.Name, Node: pod.Spec.NodeName,
		Finished:  ready && phase == PhaseDone,
		Available: ready && phase != PhaseRestarting && phase != PhaseFailed && !restartPending(pod, state)}
}

// stepSurge decides and writes this pass's extra Pods, and returns the
// window they open. Without a surge it is the zero step.
func (r *run) stepSurge(ctx context.Context, pods []*corev1.Pod, now time.Time) (surgeStep, error) {
	s := r.surge
	if s == nil {
		return surgeStep{}, nil
	}
	in := SurgeInput{MaxSurge: s.spec.max, Replicas: r.w.expected(), PerNode: s.spec.perNode, Now: now, Deadline: s.deadline}
	byName := map[string]*corev1.Pod{}
	for _, pod := range pods {
		if pod.DeletionTimestamp == nil {
			in.Originals = append(in.Originals, r.originalOf(pod, now))
			byName[pod.Name] = pod
		}
	}
	in.Extras = s.observed(r.w.minReadySeconds(), now)
	d := PlanSurge(in)
	if d.Stuck != "" {
		return surgeStep{stuck: d.Stuck, reason: d.Reason}, nil
	}
	for _, name := range d.Delete {
		if err := r.deleteExtra(ctx, name); err != nil {
			return surgeStep{}, err
		}
	}
	for i := 0; i < d.Create; i++ {
		if err := r.createExtra(ctx, nil); err != nil {
			return surgeStep{}, err
		}
	}
	for _, name := range d.CreateFor {
		if err := r.createExtra(ctx, byName[name]); err != nil {
			return surgeStep{}, err
		}
	}
	step := surgeStep{window: d.Window}
	if s.spec.perNode {
		nodes := d.WindowNodes
		step.allowed = func(pod *corev1.Pod) bool { return nodes[pod.Spec.NodeName] }
	}
	return step, nil
}

// observed are the extra Pods as the cache has them, with this run's own
// creations and deletions the cache does not show yet.
func (s *surgeState) observed(minReadySeconds int32, now time.Time) []SurgeExtra {
	seen := map[string]bool{}
	var out []SurgeExtra
	for _, pod := range s.extras() {
		seen[pod.Name] = true
		x := extraOf(pod, minReadySeconds, now)
		x.Deleting = x.Deleting || s.deleted[pod.Name]
		out = append(out, x)
	}
	for name, x := range s.created {
		// The cache shows a creation within moments; one it never showed
		// (created and deleted between two looks) must not count for ever.
		if seen[name] || now.Sub(x.Created) > createdGrace {
			delete(s.created, name)
			continue
		}
		out = append(out, x)
	}
	for name := range s.deleted {
		if !seen[name] {
			delete(s.deleted, name)
		}
	}
	return out
}

func (r *run) createExtra(ctx context.Context, original *corev1.Pod) error {
	s := r.surge
	pod, err := r.e.createExtra(ctx, s, r.change.Ref.Namespace, original)
	if err != nil {
		return fmt.Errorf("%s: %w", r.change.Ref, err)
	}
	s.created[pod.Name] = SurgeExtra{Name: pod.Name, Node: pod.Spec.NodeName, Created: r.e.now()}
	return nil
}

func (e *Engine) createExtra(ctx context.Context, s *surgeState, namespace string, original *corev1.Pod) (*corev1.Pod, error) {
	prefix, node, owner := s.spec.prefix, "", s.spec.owner
	if s.spec.perNode {
		if original == nil {
			return nil, fmt.Errorf("an extra Pod of a DaemonSet needs the Pod it stands in for")
		}
		prefix, node = original.Name, original.Spec.NodeName
		owner = &metav1.OwnerReference{APIVersion: "v1", Kind: "Pod", Name: original.Name, UID: original.UID}
	}
	pod := ExtraPod(s.tmpl, namespace, prefix, string(s.spec.key), *owner, node)
	created, err := e.client.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{FieldManager: diff.FieldManager})
	if err != nil {
		return nil, fmt.Errorf("create extra Pod: %w", err)
	}
	return created, nil
}

func (r *run) deleteExtra(ctx context.Context, name string) error {
	err := r.e.client.CoreV1().Pods(r.change.Ref.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: delete extra Pod %s: %w", r.change.Ref, name, err)
	}
	r.surge.deleted[name] = true
	delete(r.surge.created, name)
	return nil
}

// extrasGone deletes every extra Pod the cache shows and reports whether
// none is left (also none being deleted): the rollout ends only then.
func (r *run) extrasGone(ctx context.Context) (bool, error) {
	if r.surge == nil {
		return true, nil
	}
	left := r.surge.observed(0, r.e.now())
	for _, x := range left {
		if !x.Deleting {
			if err := r.deleteExtra(ctx, x.Name); err != nil {
				return false, err
			}
		}
	}
	return len(left) == 0, nil
}

// dropExtras deletes the extra Pods of a rollout that ended without
// success, without waiting for them to go: the failed Pods take the
// availability they take, and nothing of the rollout may stay behind.
func (e *Engine) dropExtras(ctx context.Context, w workload, namespace string) error {
	spec := surgeOf(w)
	if spec == nil {
		return nil
	}
	return e.deleteExtras(ctx, namespace, spec.key)
}

// deleteExtras deletes the extra Pods labelled for the workload key, one by
// one (no deletecollection in refit's role: they are few).
func (e *Engine) deleteExtras(ctx context.Context, namespace string, key types.UID) error {
	pods := e.client.CoreV1().Pods(namespace)
	list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: SurgeLabel + "=" + string(key)})
	if err != nil {
		return fmt.Errorf("list extra Pods in %s: %w", namespace, err)
	}
	for _, pod := range list.Items {
		if pod.DeletionTimestamp != nil {
			continue
		}
		err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete extra Pod %s/%s: %w", namespace, pod.Name, err)
		}
	}
	return nil
}

// probeSurge brings up the rollout's first extra Pod before anything else is
// written, and waits until the scheduler has placed it: a workload without
// room for it goes the ordinary way (fallback says why) with nothing
// changed. A resumed rollout with extra Pods already has its answer.
func (e *Engine) probeSurge(ctx context.Context, w workload, change diff.Change) (fallback string, err error) {
	s, err := newSurgeState(w, change.Desired)
	if s == nil || err != nil {
		return "", err
	}
	if change.Live != nil {
		if _, resuming := readRecord(change.Live.GetAnnotations()); resuming {
			return "", nil // the template is written: the run brings the extra Pods up
		}
	}
	ns := change.Ref.Namespace
	pods := e.client.CoreV1().Pods(ns)
	existing, err := pods.List(ctx, metav1.ListOptions{LabelSelector: SurgeLabel + "=" + string(s.spec.key)})
	if err != nil {
		return "", fmt.Errorf("%s: list extra Pods: %w", change.Ref, err)
	}
	if len(existing.Items) > 0 {
		return "", nil
	}
	var original *corev1.Pod
	if s.spec.perNode {
		if original, err = e.firstPod(ctx, w, ns); err != nil || original == nil {
			return "", err
		}
	}
	pod, err := e.createExtra(ctx, s, ns, original)
	if err != nil {
		return "", fmt.Errorf("%s: %w", change.Ref, err)
	}
	var why string
	deadline := time.NewTimer(s.deadline)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		cur, err := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		switch {
		case err != nil && !apierrors.IsNotFound(err):
			return "", fmt.Errorf("%s: extra Pod %s: %w", change.Ref, pod.Name, err)
		case err == nil && cur.Spec.NodeName != "":
			return "", nil // the run takes it over
		case err == nil:
			why = extraOf(cur, 0, e.now()).Unschedulable
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-tick.C:
			continue
		case <-deadline.C:
		}
		break
	}
	if err := pods.Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return "", fmt.Errorf("%s: delete extra Pod %s: %w", change.Ref, pod.Name, err)
	}
	reason := fmt.Sprintf("maxUnavailable is 0 and there is no room for an extra Pod: %s stayed unscheduled for %s (%s)", pod.Name, s.deadline, why)
	if err := e.refuseSurge(ctx, change, reason); err != nil {
		return "", err
	}
	return reason, nil
}

// surgeRefusal is the content of SurgeRefusedAnnotation.
type surgeRefusal struct {
	Revision string    `json:"revision"`
	At       time.Time `json:"at"`
	Reason   string    `json:"reason"`
}

// refuseSurge notes on the live workload that the target's surge found no
// room, so that the next plan (Precheck) sends it the ordinary way instead
// of probing again. It is written as an update, not an apply: refit's
// apply of Git's workload leaves it alone, and it names the target, so the
// next images are tried afresh.
func (e *Engine) refuseSurge(ctx context.Context, change diff.Change, reason string) error {
	target, err := targetOf(change)
	if err != nil {
		return err
	}
	note, err := json.Marshal(surgeRefusal{Revision: target.Revision, At: e.now().UTC().Truncate(time.Second), Reason: reason})
	if err != nil {
		return err
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{SurgeRefusedAnnotation: string(note)}}})
	if err != nil {
		return err
	}
	gvr := resources[change.Ref.GroupKind()]
	_, err = e.dyn.Resource(gvr).Namespace(change.Ref.Namespace).Patch(ctx, change.Ref.Name, types.MergePatchType, patch,
		metav1.PatchOptions{FieldManager: diff.FieldManager})
	if err != nil {
		return fmt.Errorf("%s: note that the surge found no room: %w", change.Ref, err)
	}
	return nil
}

// surgeRefused is the reason a surge of change's target found no room
// before, or "".
func surgeRefused(change diff.Change, target Target) string {
	if change.Live == nil {
		return ""
	}
	var note surgeRefusal
	raw, ok := change.Live.GetAnnotations()[SurgeRefusedAnnotation]
	if !ok || json.Unmarshal([]byte(raw), &note) != nil || note.Revision != target.Revision {
		return ""
	}
	return note.Reason
}

// firstPod is the workload's Pod the surge starts with (the first by name,
// as PlanSurge orders them), or nil.
func (e *Engine) firstPod(ctx context.Context, w workload, namespace string) (*corev1.Pod, error) {
	var opts metav1.ListOptions
	w.listOptions(&opts)
	list, err := e.client.CoreV1().Pods(namespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list Pods in %s: %w", namespace, err)
	}
	var first *corev1.Pod
	for i := range list.Items {
		pod := &list.Items[i]
		if w.owns(pod) && pod.DeletionTimestamp == nil && pod.Spec.NodeName != "" && (first == nil || pod.Name < first.Name) {
			first = pod
		}
	}
	return first, nil
}

// deploymentSurge is a Deployment's surge, or nil (Pods may go down, or a
// fallback says why in place is impossible).
func deploymentSurge(live *appsv1.Deployment, maxUnavailable int) (*surgeSpec, string, error) {
	replicas := 1
	if live.Spec.Replicas != nil {
		replicas = int(*live.Spec.Replicas)
	}
	var v *intstr.IntOrString
	if ru := live.Spec.Strategy.RollingUpdate; ru != nil {
		v = ru.MaxSurge
	}
	n, fallback, err := SurgeCount(maxUnavailable, v, intstr.FromString("25%"), replicas)
	if err != nil || fallback != "" || n == 0 {
		return nil, fallback, err
	}
	return &surgeSpec{max: n, key: live.UID, prefix: live.Name,
		owner: &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: live.Name, UID: live.UID}}, "", nil
}

// daemonSetSurge is a DaemonSet's surge from Git's strategy (the hold
// replaces the live one), or nil.
func daemonSetSurge(desired *unstructured.Unstructured, live *appsv1.DaemonSet, bound int) (*surgeSpec, string, error) {
	var ds appsv1.DaemonSet
	if err := fromUnstructured(desired, &ds); err != nil {
		return nil, "", err
	}
	var v *intstr.IntOrString
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		v = ru.MaxSurge
	}
	n, fallback, err := SurgeCount(bound, v, intstr.FromInt32(0), int(live.Status.DesiredNumberScheduled))
	if err != nil || fallback != "" || n == 0 {
		return nil, fallback, err
	}
	return &surgeSpec{max: n, perNode: true, key: live.UID, prefix: live.Name}, "", nil
}

// startSurge sets up the run's surge, if the workload has one: its extra
// Pods come from the run's Pod cache (they match the workload's selector).
func (r *run) startSurge(store cache.Store) error {
	s, err := newSurgeState(r.w, r.change.Desired)
	if s == nil || err != nil {
		return err
	}
	s.extras = func() []*corev1.Pod {
		var out []*corev1.Pod
		for _, obj := range store.List() {
			if pod, ok := obj.(*corev1.Pod); ok && isExtraOf(pod, s.spec.key) {
				out = append(out, pod)
			}
		}
		return out
	}
	r.surge = s
	return nil
}

// DropExtras deletes the extra Pods of change's workload (an in-place
// rollout interrupted during its surge, then sent the ordinary way): the
// run that would have deleted them will not come. It writes nothing for a
// workload without any.
func (e *Engine) DropExtras(ctx context.Context, change diff.Change) error {
	if change.Live == nil || change.Live.GetUID() == "" {
		return nil
	}
	gk := change.Ref.GroupKind()
	if gk != deploymentGVRKind && gk != daemonSetGVRKind {
		return nil
	}
	if err := e.deleteExtras(ctx, change.Ref.Namespace, change.Live.GetUID()); err != nil {
		return fmt.Errorf("%s: %w", change.Ref, err)
	}
	return nil
}

var (
	deploymentGVRKind = diff.Ref{Group: "apps", Kind: "Deployment"}.GroupKind()
	daemonSetGVRKind  = diff.Ref{Group: "apps", Kind: "DaemonSet"}.GroupKind()
)
