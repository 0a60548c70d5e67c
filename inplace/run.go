package inplace

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/diff"
)

// run is one workload's rollout in progress.
type run struct {
	e      *Engine
	w      workload
	change diff.Change
	target Target
	opts   Options
	res    *Result
	gate   bool

	lister  func() ([]*corev1.Pod, error)
	pending map[string]bool // patched by this run, not yet seen so by the cache
	batch   int

	// pdbAllowed and the workload's check are read from the API server at
	// most once a second (slowRead), not on every pass.
	pdbAllowed int
	slowRead   time.Time
	// lastProgress is when a Pod last finished (or the rollout started).
	lastProgress time.Time
}

func (r *run) loop(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	factory := informers.NewSharedInformerFactoryWithOptions(r.e.client, 0,
		informers.WithNamespace(r.change.Ref.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = r.w.selector().String() }))
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
	lister := podInformer.Lister().Pods(r.change.Ref.Namespace)
	r.lister = func() ([]*corev1.Pod, error) { return lister.List(r.w.selector()) }
	r.pending = map[string]bool{}

	ticker := time.NewTicker(r.opts.Resync)
	defer ticker.Stop()
	for {
		done, err := r.pass(ctx)
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

// pass looks at every Pod once and takes the next step: finish, stop on a
// failure, or patch the next batch. It is level-based: everything it needs
// is on the objects, so a restarted refit simply runs passes again.
func (r *run) pass(ctx context.Context) (bool, error) {
	all, err := r.lister()
	if err != nil {
		return false, err
	}
	now := r.e.now()
	// Passes run on every burst of Pod events; what is read from the API
	// server rather than the Pod cache is read at most once a second.
	if now.Sub(r.slowRead) > time.Second {
		if err := r.w.check(ctx); err != nil {
			r.fail(ctx, "", err.Error())
			return true, nil
		}
		if r.pdbAllowed, err = r.e.disruptionsAllowed(ctx, r.change.Ref.Namespace, all); err != nil {
			return false, err
		}
		r.slowRead = now
	}
	maxUnavailable, err := r.w.maxUnavailable()
	if err != nil {
		return false, err
	}
	var (
		candidates  []Candidate
		done        int
		unavailable int
		byName      = map[string]*corev1.Pod{}
	)
	deadline := r.opts.ProgressDeadline
	if _, set := r.change.Desired.GetAnnotations()[ProgressDeadlineAnnotation]; !set && r.w.progressDeadline() > 0 {
		deadline = r.w.progressDeadline()
	}
	for _, pod := range all {
		if !r.w.owns(pod) {
			continue
		}
		byName[pod.Name] = pod
		phase, reason := PodPhase(pod, r.target, now, deadline)
		if r.pending[pod.Name] {
			if phase == PhaseOld {
				phase = PhaseRestarting // our patch is not in the cache yet
			} else {
				delete(r.pending, pod.Name)
			}
		}
		if !r.w.eligible(pod) {
			continue
		}
		if phase == PhaseFailed {
			r.fail(ctx, pod.Name, reason)
			return true, nil
		}
		// A patched Pod is counted down from the patch on, before the
		// kubelet has even killed its container: it is about to go down.
		// So is one patched for an earlier target (a re-targeted rollout)
		// whose restart has not happened yet.
		available := PodAvailable(pod, r.w.minReadySeconds(), now) && phase != PhaseRestarting &&
			!(phase == PhaseOld && RestartPending(pod))
		if phase == PhaseDone && r.gate && !gateTrue(pod) && podContainersReady(pod) {
			// The new images run: open the gate (also on new Pods).
			if err := r.e.setGate(ctx, pod, corev1.ConditionTrue); err != nil {
				return false, err
			}
			available = false // Ready follows once the kubelet sees the gate
		}
		if phase == PhaseOld && r.gate && gateMissing(pod) {
			if err := r.e.setGate(ctx, pod, corev1.ConditionTrue); err != nil {
				return false, err
			}
		}
		if !available {
			unavailable++
		}
		if phase == PhaseDone && available {
			done++
		}
		candidates = append(candidates, Candidate{
			Name: pod.Name, Ordinal: r.w.ordinal(pod), Available: available,
			Done: phase == PhaseDone, InProgress: phase == PhaseRestarting,
		})
	}
	if unavailable > r.res.MaxObserved {
		r.res.MaxObserved = unavailable
	}
	if done > r.res.Updated || r.lastProgress.IsZero() {
		r.lastProgress = now
	}
	r.res.Total, r.res.Updated = len(candidates), done
	if deadline > 0 && now.Sub(r.lastProgress) > deadline {
		// A Pod that never becomes available for a reason of its own (no
		// room for a recreated Pod, a failing probe) must not hang the
		// rollout: no Pod finished within the deadline.
		r.fail(ctx, "", fmt.Sprintf("no Pod finished updating within the progress deadline of %s (%d of %d done)", deadline, done, len(candidates)))
		return true, nil
	}
	if done == len(candidates) && len(r.pending) == 0 {
		if err := r.w.release(ctx); err != nil {
			return false, err
		}
		r.res.Outcome = Succeeded
		r.report(unavailable, maxUnavailable, nil)
		return true, nil
	}
	batch := SelectBatch(candidates, maxUnavailable, r.pdbAllowed)
	if len(batch) == 0 {
		return false, nil
	}
	if err := r.patchBatch(ctx, batch, byName); errors.Is(err, errStopped) {
		return true, nil
	} else if err != nil {
		return false, err
	}
	r.report(unavailable+len(batch), maxUnavailable, batch)
	return false, nil
}

func (r *run) patchBatch(ctx context.Context, batch []string, pods map[string]*corev1.Pod) error {
	r.batch++
	if r.gate {
		for _, name := range batch {
			if err := r.e.setGate(ctx, pods[name], corev1.ConditionFalse); err != nil {
				return err
			}
		}
		if r.opts.Grace > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(r.opts.Grace):
			}
		}
	}
	for _, name := range batch {
		pod := pods[name]
		patch, err := PodPatch(pod, r.target, r.w.revisionLabels(), r.e.now())
		if err != nil {
			return fmt.Errorf("%s: %w", r.change.Ref, err)
		}
		_, err = r.e.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch,
			metav1.PatchOptions{FieldManager: diff.FieldManager})
		switch {
		case apierrors.IsInvalid(err) || apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			// The Pod changed under us (its image, or it is gone): the next
			// pass sees it as it is now.
			continue
		case apierrors.IsForbidden(err):
			// Admission (AlwaysPullImages, Pod Security, an image policy
			// webhook) refuses the update.
			r.fail(ctx, name, "the API server refused the image patch: "+err.Error())
			return errStopped
		case err != nil:
			return fmt.Errorf("pod %s/%s: patch images: %w", pod.Namespace, pod.Name, err)
		}
		r.pending[name] = true
	}
	return nil
}

func (r *run) report(unavailable, maxUnavailable int, patched []string) {
	if r.opts.Progress == nil {
		return
	}
	r.opts.Progress(Progress{Ref: r.change.Ref, Batch: r.batch, Updated: r.res.Updated, Total: r.res.Total,
		Unavailable: unavailable, MaxUnavailable: maxUnavailable, Patched: patched})
}

// errStopped ends the pass loop after fail recorded a Failed outcome.
var errStopped = errors.New("rollout stopped")

// fail stops the rollout: no further Pod is touched, and with
// refit.dev/rollback: auto the patched Pods go back to their old images. The
// controller's hold stays in place, so it does not roll out the failing
// template either.
func (r *run) fail(ctx context.Context, pod, reason string) {
	r.res.Outcome, r.res.FailedPod, r.res.Reason = Failed, pod, reason
	if r.change.Desired.GetAnnotations()[RollbackAnnotation] == "auto" {
		n, err := r.rollback(ctx)
		r.res.RolledBack = n
		if err != nil {
			r.res.Reason += "; rollback: " + err.Error()
		}
	}
}

func (r *run) rollback(ctx context.Context) (int, error) {
	pods, err := r.lister()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, pod := range pods {
		if !r.w.owns(pod) || !r.target.SpecAtTarget(pod) {
			continue
		}
		state, ok := ReadState(pod)
		if !ok || state.Revision != r.target.Revision {
			continue
		}
		patch, err := RevertPatch(pod, state, r.w.previousLabels(), r.e.now())
		if err != nil {
			return n, err
		}
		if _, err := r.e.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.JSONPatchType, patch,
			metav1.PatchOptions{FieldManager: diff.FieldManager}); err != nil && !apierrors.IsNotFound(err) {
			return n, fmt.Errorf("pod %s: %w", pod.Name, err)
		}
		n++
	}
	return n, nil
}
