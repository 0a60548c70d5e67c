package inplace

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/diff"
)

// run is one workload's rollout in progress: a loop of passes, each an
// Assess of the Pods as the cache has them followed by the writes it asks
// for. Everything it needs survives on the objects, so a restarted refit
// simply runs passes again.
type run struct {
	e      *Engine
	w      workload
	change diff.Change
	target Target
	opts   Options
	res    *Result
	gate   bool

	lister func() ([]*corev1.Pod, error)
	// pending are Pods this run patched whose patch the cache may not show.
	pending map[types.UID]bool
	// marked are Pods this run told the Engine it is taking down (busy).
	marked map[types.UID]bool
	states StateCache
	batch  int

	// The workload and the PDBs are read from the API server at most once
	// a second (slowRead), not on every pass.
	budgets  []DisruptionBudget
	slowRead time.Time
	// lastProgress is when a Pod last finished (or the rollout started).
	lastProgress time.Time
	// started: the start was reported; pods are the last pass's Pods.
	started bool
	pods    []PodProgress
	// surge, when the bound is 0: the extra Pods (surge_run.go).
	surge *surgeState
	// pull is the pre-pull step (nil: off).
	pull *pulls
}

// newRun starts a rollout of a prepared workload. Its target includes the
// workload's revision labels: a Pod at the target spec without them (a
// refit killed between a Pod's resize and its patch) is not done but gets
// a quiet patch that writes them; left unlabelled, the StatefulSet or
// DaemonSet controller would take it for an old revision and recreate it
// once the hold is released.
func newRun(e *Engine, w workload, change diff.Change, target Target, opts Options, res *Result) *run {
	target.Labels = withRevisionLabels(target.Labels, w.revisionLabels())
	return &run{e: e, w: w, change: change, target: target, opts: opts, res: res, gate: hasGate(change.Desired),
		pending: map[types.UID]bool{}, marked: map[types.UID]bool{}}
}

func (r *run) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer r.unmarkAll()
	factory := informers.NewSharedInformerFactoryWithOptions(r.e.client, 0,
		informers.WithNamespace(r.change.Ref.Namespace), informers.WithTweakListOptions(r.w.listOptions))
	podInformer := factory.Core().V1().Pods()
	wake := make(chan struct{}, 1)
	notify := func(any) {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	_, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, n any) { notify(n) },
		DeleteFunc: notify,
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), podInformer.Informer().HasSynced) {
		return fmt.Errorf("%s: pod cache did not sync: %w", r.change.Ref, ctx.Err())
	}
	informer := podInformer.Informer()
	r.lister = func() ([]*corev1.Pod, error) {
		var pods []*corev1.Pod
		for _, obj := range informer.GetStore().List() {
			if pod, ok := obj.(*corev1.Pod); ok && r.w.owns(pod) {
				pods = append(pods, pod)
			}
		}
		return pods, nil
	}
	if err := r.startSurge(informer.GetStore()); err != nil {
		return err
	}
	if r.pull, err = r.startPulls(ctx, notify); err != nil {
		return err
	}
	defer r.pull.cleanup(ctx)

	ticker := time.NewTicker(r.opts.Resync)
	defer ticker.Stop()
	for {
		done, err := r.pass(ctx)
		if done && r.res.Outcome == Failed {
			err = r.e.dropExtras(ctx, r.w, r.change.Ref.Namespace)
		}
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: in-place rollout interrupted: %w", r.change.Ref, ctx.Err())
		case <-wake:
			// A batch makes a burst of Pod events (each Pod changes status
			// several times): let them pile up briefly and look once, so a
			// large workload costs a pass per burst, not per event.
			time.Sleep(passGap)
			select {
			case <-wake:
			default:
			}
		case <-ticker.C:
		}
	}
}

// passGap is the least time between two passes woken by Pod events.
const passGap = 20 * time.Millisecond

// pass decides the next step from the Pods (Assess) and writes it: gates,
// the end, a failure, or the next batch within the bound and the PDBs.
func (r *run) pass(ctx context.Context) (bool, error) {
	pods, err := r.lister()
	if err != nil {
		return false, err
	}
	now := r.e.now()
	if now.Sub(r.slowRead) > time.Second {
		if err := r.w.refresh(ctx); err != nil {
			var stop *stopError
			if errors.As(err, &stop) {
				r.fail("", stop.reason)
				return true, nil
			}
			return false, err
		}
		if r.budgets, err = r.e.disruptionBudgets(ctx, r.change.Ref.Namespace); err != nil {
			return false, err
		}
		r.slowRead = now
	}
	maxUnavailable, err := r.w.maxUnavailable()
	if err != nil {
		return false, err
	}
	surge, err := r.stepSurge(ctx, pods, now)
	if err != nil {
		return false, err
	}
	if surge.stuck != "" {
		r.fail(surge.stuck, surge.reason)
		return true, nil
	}
	maxUnavailable += surge.window
	deadline := r.deadline()
	in := PassInput{
		Pods: pods, Target: r.target, Rollout: r.w.record().ID, Now: now, Deadline: deadline,
		MinReadySeconds: r.w.minReadySeconds(), MaxUnavailable: maxUnavailable, Expected: r.w.expected(),
		Eligible: r.w.eligible, Ordinal: r.w.ordinal, Pending: r.pending, Gate: r.gate, States: &r.states,
		Window: surge.allowed,
	}
	hold, pullFailed, err := r.pull.step(ctx, pods, in)
	if err != nil {
		return false, err
	}
	in.Hold = holdOn(hold)
	d := Assess(in)
	for _, uid := range d.Settled {
		delete(r.pending, uid)
	}
	r.pods = r.podProgress(pods, d)
	for uid, phase := range d.Phases {
		if phase == PhaseDone && r.marked[uid] {
			r.unmark(uid)
		}
	}
	if err := r.openGates(ctx, d.OpenGates); err != nil {
		return false, err
	}
	if d.Unavailable > r.res.MaxObserved {
		r.res.MaxObserved = d.Unavailable
	}
	if d.Done > r.res.Updated || r.lastProgress.IsZero() {
		r.lastProgress = now
	}
	r.res.Total, r.res.Updated = d.Total, d.Done
	if !r.started {
		r.started = true
		r.reportStart(maxUnavailable)
	}
	r.reportPulls()
	switch {
	case pullFailed != nil:
		r.fail(pullFailed.Pod, pullFailed.String())
		return true, nil
	case d.Failed != nil:
		r.fail(d.Failed.Name, d.Reason)
		return true, nil
	case d.Finished:
		if gone, err := r.extrasGone(ctx); err != nil || !gone {
			return false, err
		}
		if err := r.w.release(ctx); err != nil {
			return false, err
		}
		r.res.Outcome = Succeeded
		r.report(d.Unavailable, maxUnavailable, nil)
		return true, nil
	case deadline > 0 && now.Sub(r.lastProgress) > deadline:
		// A Pod that never becomes available for a reason of its own (no
		// room for a recreated Pod, a failing probe) must not hang the
		// rollout: no Pod finished within the deadline.
		r.fail("", fmt.Sprintf("no Pod finished updating within the progress deadline of %s (%d of %d done)%s", deadline, d.Done, d.Total, resizeStall(pods, d.Phases)))
		return true, nil
	case len(d.Patch) == 0 && len(d.Quiet) == 0:
		return false, nil
	}
	if stopped, err := r.patchQuiet(ctx, d.Quiet, d.Unavailable, maxUnavailable); err != nil || stopped {
		return stopped, err
	}
	batch, err := r.e.withinBudgets(ctx, r.change.Ref.Namespace, d.Patch, r.budgets)
	if err != nil {
		return false, err
	}
	for _, pod := range batch {
		r.marked[pod.UID] = true
	}
	if len(batch) == 0 {
		return false, nil
	}
	patched, err := r.patchBatch(ctx, batch, maxUnavailable)
	if errors.Is(err, errStopped) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	for _, name := range patched {
		for i := range r.pods {
			if r.pods[i].Name == name {
				r.pods[i].Phase, r.pods[i].Draining = PhaseRestarting, false
			}
		}
	}
	r.report(d.UnavailableAfter(batch, patched), maxUnavailable, patched)
	return false, nil
}

// podProgress lists the eligible Pods with their phases, by name.
func (r *run) podProgress(pods []*corev1.Pod, d PassDecision) []PodProgress {
	out := make([]PodProgress, 0, len(d.Phases))
	for _, pod := range pods {
		phase, ok := d.Phases[pod.UID]
		if !ok {
			continue
		}
		p := PodProgress{Name: pod.Name, Phase: phase, Draining: phase == PhaseOld && r.marked[pod.UID] && !r.pending[pod.UID]}
		if d.Failed != nil && d.Failed.UID == pod.UID {
			p.Reason = d.Reason
		}
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (r *run) deadline() time.Duration {
	if _, set := r.change.Desired.GetAnnotations()[ProgressDeadlineAnnotation]; !set && r.w.progressDeadline() > 0 {
		return r.w.progressDeadline()
	}
	return r.opts.ProgressDeadline
}

func (r *run) openGates(ctx context.Context, pods []*corev1.Pod) error {
	for _, pod := range pods {
		if err := r.e.setGate(ctx, pod, corev1.ConditionTrue); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// patchBatch drains (with the gate) and patches the batch. Pods the API
// server refuses to patch stop the rollout at once, with its message.
func (r *run) patchBatch(ctx context.Context, batch []*corev1.Pod, maxUnavailable int) ([]string, error) {
	r.batch++
	if r.gate {
		for _, pod := range batch {
			if err := r.e.setGate(ctx, pod, corev1.ConditionFalse); err != nil && !apierrors.IsNotFound(err) {
				return nil, err
			}
		}
		if r.opts.Grace > 0 {
			r.reportDraining(batch, maxUnavailable)
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(r.opts.Grace):
			}
		}
	}
	var patched []string
	for i, pod := range batch {
		err := r.patchPod(ctx, pod)
		var refused *refusedError
		switch {
		case errors.As(err, &refused):
			// Nothing more is touched; the drained Pods that were not
			// patched get their gate back.
			r.abandon(ctx, batch[i:])
			r.fail(pod.Name, refused.Error())
			return patched, errStopped
		case err != nil:
			r.abandon(ctx, batch[i:])
			return patched, err
		}
		patched = append(patched, pod.Name)
	}
	return patched, nil
}

// refusedError: the API server turned a Pod patch down for good.
type refusedError struct{ msg string }

func (e *refusedError) Error() string { return e.msg }

// patchPod writes one Pod's patch. A patch that fails because the Pod
// changed under refit (its image, its generation, a first annotation by
// another writer) is not an error: the next pass sees the Pod as it is.
func (r *run) patchPod(ctx context.Context, pod *corev1.Pod) error {
	pod, resized, err := r.resize(ctx, pod)
	if err != nil || pod == nil {
		return err
	}
	patch, err := PodPatch(pod, PatchInput{Target: r.target, Rollout: r.w.record().ID, Labels: r.w.revisionLabels(), Resized: resized, Now: r.e.now()})
	if err != nil {
		return fmt.Errorf("%s: %w", r.change.Ref, err)
	}
	pods := r.e.client.CoreV1().Pods(pod.Namespace)
	_, err = pods.Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: diff.FieldManager})
	switch {
	case err == nil:
		r.pending[pod.UID] = true
		return nil
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		r.unmark(pod.UID)
		return nil
	case refusal(err):
		// A failed test op also comes back as a 4xx: tell it from a refusal
		// by whether the Pod changed since it was read.
		if podChanged(ctx, pods, pod) {
			r.unmark(pod.UID)
			return nil
		}
		return &refusedError{msg: fmt.Sprintf("the API server refused the image patch of Pod %s: %s", pod.Name, apiMessage(err))}
	default:
		return fmt.Errorf("pod %s/%s: patch images: %w", pod.Namespace, pod.Name, err)
	}
}

// abandon gives Pods that were drained but not patched their gate back.
func (r *run) abandon(ctx context.Context, pods []*corev1.Pod) {
	for _, pod := range pods {
		if r.pending[pod.UID] {
			continue
		}
		r.unmark(pod.UID)
		if r.gate {
			// Best effort: the gate keeper of refit run opens it too.
			_ = r.e.setGate(ctx, pod, corev1.ConditionTrue)
		}
	}
}

func (r *run) unmark(uid types.UID) {
	if r.marked[uid] {
		delete(r.marked, uid)
		r.e.busy.remove(uid)
	}
}

func (r *run) unmarkAll() {
	for uid := range r.marked {
		r.unmark(uid)
	}
}

func (r *run) report(unavailable, maxUnavailable int, patched []string) {
	if r.opts.Progress == nil {
		return
	}
	r.opts.Progress(Progress{Ref: r.change.Ref, Batch: r.batch, Updated: r.res.Updated, Total: r.res.Total,
		Unavailable: unavailable, MaxUnavailable: maxUnavailable, Patched: patched, Pods: slices.Clone(r.pods)})
}

// reportDraining tells the batch's Pods that wait out the grace.
func (r *run) reportDraining(batch []*corev1.Pod, maxUnavailable int) {
	if r.opts.Progress == nil {
		return
	}
	names := make([]string, 0, len(batch))
	for _, pod := range batch {
		names = append(names, pod.Name)
		for i := range r.pods {
			if r.pods[i].Name == pod.Name {
				r.pods[i].Draining = true
			}
		}
	}
	r.opts.Progress(Progress{Ref: r.change.Ref, Batch: r.batch, Updated: r.res.Updated, Total: r.res.Total,
		MaxUnavailable: maxUnavailable, Draining: names, Pods: slices.Clone(r.pods)})
}

func (r *run) reportStart(maxUnavailable int) {
	if r.opts.Progress == nil {
		return
	}
	r.opts.Progress(Progress{Ref: r.change.Ref, Updated: r.res.Updated, Total: r.res.Total,
		MaxUnavailable: maxUnavailable, Start: true, Pods: slices.Clone(r.pods)})
}

// errStopped ends the pass loop after fail recorded a Failed outcome.
var errStopped = errors.New("rollout stopped")

// stopError from a workload's refresh stops the rollout as Failed.
type stopError struct{ reason string }

func (e *stopError) Error() string { return e.reason }

// fail stops the rollout: no further Pod is touched. The controller's hold
// stays in place, so it does not roll out the failing template either;
// Rollout rolls back if the workload asks for it.
func (r *run) fail(pod, reason string) {
	r.res.Outcome, r.res.FailedPod, r.res.Reason = Failed, pod, reason
}
