package inplace

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/diff"
)

// Annotations refit reads from the workload in Git, and the one it keeps on
// the live workload while a rollout is under way.
const (
	GraceAnnotation            = "refit.dev/grace-seconds"
	ProgressDeadlineAnnotation = "refit.dev/progress-deadline"
	RollbackAnnotation         = "refit.dev/rollback"
	// RolloutAnnotation marks a workload whose Pods refit is updating in
	// place; it holds the rollout's record (rolloutRecord). A restarted refit
	// finds it and continues.
	RolloutAnnotation = diff.RolloutAnnotation
)

// Outcome of one workload's in-place rollout.
type Outcome string

const (
	Succeeded Outcome = "Succeeded"
	// Failed: a Pod could not take the new images; no further Pod was
	// touched (and with rollback, the patched ones went back).
	Failed Outcome = "Failed"
	// Fallback: a precondition of the in-place path does not hold; nothing
	// was changed, and the change must go the ordinary (recreate) way.
	Fallback Outcome = "Fallback"
)

// Result of Rollout.
type Result struct {
	Ref     diff.Ref
	Outcome Outcome
	// Reason explains a Failed or Fallback outcome.
	Reason string
	// FailedPod is the Pod that stopped a Failed rollout.
	FailedPod   string
	Updated     int
	Total       int
	RolledBack  int
	MaxObserved int // the most Pods seen unavailable at once
	Duration    time.Duration
}

// Progress is reported after every pass that changed something.
type Progress struct {
	Ref            diff.Ref
	Batch          int
	Updated, Total int
	Unavailable    int
	MaxUnavailable int
	Patched        []string
}

// Options are per-rollout settings. Start with DefaultOptions.
type Options struct {
	// Grace is how long a Pod's readiness gate stays False before its
	// images are patched, so endpoints drain (refit.dev/grace-seconds).
	Grace time.Duration
	// ProgressDeadline bounds one Pod's restart, for kinds without a
	// progressDeadlineSeconds of their own (refit.dev/progress-deadline).
	ProgressDeadline time.Duration
	// Resync is how often a pass runs without any Pod event.
	Resync time.Duration
	// Progress, if set, receives progress reports.
	Progress func(Progress)
}

// DefaultOptions: 3 s grace, 600 s deadline.
func DefaultOptions() Options {
	return Options{Grace: 3 * time.Second, ProgressDeadline: 600 * time.Second, Resync: time.Second}
}

// Engine rolls out image-only changes in place.
type Engine struct {
	client kubernetes.Interface
	dyn    dynamic.Interface
	now    func() time.Time
}

// New returns an Engine for the cluster cfg points at.
func New(cfg *rest.Config) (*Engine, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Engine{client: client, dyn: dyn, now: time.Now}, nil
}

// workload is what differs between kinds: how to hold the controller's own
// rollout while refit patches Pods, and how to let go of it.
type workload interface {
	// precheck reads the live workload and says why the in-place path
	// cannot be taken, or "". It writes nothing.
	precheck(ctx context.Context) (fallback string, err error)
	// prepare writes the new template with the hold (after precheck).
	prepare(ctx context.Context) error
	// owns tells the workload's current Pods from others matching the selector.
	owns(pod *corev1.Pod) bool
	selector() labels.Selector
	// revisionLabels are written on every patched Pod.
	revisionLabels() map[string]string
	maxUnavailable() (int, error)
	// eligible excludes Pods the rollout must not touch (a StatefulSet's
	// ordinals below the partition in Git).
	eligible(pod *corev1.Pod) bool
	ordinal(pod *corev1.Pod) int
	minReadySeconds() int32
	progressDeadline() time.Duration
	// check is called every pass: an error stops the rollout (e.g. the
	// controller started a rollout of its own).
	check(ctx context.Context) error
	// release writes the workload as Git has it, ending the hold.
	release(ctx context.Context) error
}

// rolloutRecord is the content of RolloutAnnotation.
type rolloutRecord struct {
	Revision  string            `json:"revision"`
	StartedAt time.Time         `json:"startedAt"`
	Previous  map[string]string `json:"previousLabels,omitempty"`
}

// Rollout updates the Pods of change's workload in place, or returns
// Fallback without changing anything when it cannot.
func (e *Engine) Rollout(ctx context.Context, change diff.Change, opts Options) (Result, error) {
	start := e.now()
	res := Result{Ref: change.Ref}
	if change.Desired == nil {
		return res, fmt.Errorf("%s: no desired object", change.Ref)
	}
	target, err := targetOf(change)
	if err != nil {
		return res, err
	}
	opts, err = withAnnotations(opts, change.Desired)
	if err != nil {
		return res, fmt.Errorf("%s: %w", change.Ref, err)
	}
	w, err := e.workloadFor(change, target)
	if err != nil {
		return res, err
	}
	fallback, err := w.precheck(ctx)
	if err != nil {
		return res, err
	}
	if fallback != "" {
		res.Outcome, res.Reason = Fallback, fallback
		return res, nil
	}
	if err := w.prepare(ctx); err != nil {
		return res, err
	}
	r := &run{e: e, w: w, change: change, target: target, opts: opts, res: &res, gate: hasGate(change.Desired)}
	err = r.loop(ctx)
	res.Duration = e.now().Sub(start)
	return res, err
}

// Precheck says why change cannot be rolled out in place now (the in-place
// path's preconditions), or "" if it can. It writes nothing, so a caller can
// send a change that fails it down the ordinary apply path instead.
func (e *Engine) Precheck(ctx context.Context, change diff.Change) (string, error) {
	if change.Desired == nil {
		return "", fmt.Errorf("%s: no desired object", change.Ref)
	}
	target, err := targetOf(change)
	if err != nil {
		return "", err
	}
	w, err := e.workloadFor(change, target)
	if err != nil {
		return "", err
	}
	return w.precheck(ctx)
}

// InProgress reports whether the live workload carries the record of an
// in-place rollout that has not finished (refit stopped or failed during
// it): Rollout continues it.
func (e *Engine) InProgress(ctx context.Context, change diff.Change) bool {
	_, ok := e.liveRecord(ctx, change)
	return ok
}

// targetOf reads the target images from the desired object.
func targetOf(change diff.Change) (Target, error) {
	t := Target{Containers: map[string]string{}, Init: map[string]string{}}
	spec := podSpecOf(change.Desired)
	if spec == nil {
		return t, fmt.Errorf("%s: no Pod spec", change.Ref)
	}
	var keys []string
	for _, list := range []string{"containers", "initContainers"} {
		items, _, _ := unstructured.NestedSlice(spec, list)
		for _, item := range items {
			c, _ := item.(map[string]any)
			name, _ := c["name"].(string)
			image, _ := c["image"].(string)
			if list == "containers" {
				t.Containers[name] = image
			} else if policy, _ := c["restartPolicy"].(string); policy == "Always" {
				t.Init[name] = image
			}
			keys = append(keys, list+"/"+name+"="+image)
		}
	}
	sort.Strings(keys)
	sum := sha256.Sum256([]byte(strings.Join(keys, "\n")))
	t.Revision = hex.EncodeToString(sum[:])[:12]
	return t, nil
}

func podSpecOf(obj *unstructured.Unstructured) map[string]any {
	path := []string{"spec", "template", "spec"}
	if obj.GetKind() == "Pod" {
		path = []string{"spec"}
	}
	spec, _, _ := unstructured.NestedMap(obj.Object, path...)
	return spec
}

func hasGate(obj *unstructured.Unstructured) bool {
	gates, _, _ := unstructured.NestedSlice(podSpecOf(obj), "readinessGates")
	for _, g := range gates {
		if m, ok := g.(map[string]any); ok && m["conditionType"] == string(GateCondition) {
			return true
		}
	}
	return false
}

func withAnnotations(opts Options, obj *unstructured.Unstructured) (Options, error) {
	ann := obj.GetAnnotations()
	if v, ok := ann[GraceAnnotation]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return opts, fmt.Errorf("%s %q: want a number of seconds", GraceAnnotation, v)
		}
		opts.Grace = time.Duration(n) * time.Second
	}
	if v, ok := ann[ProgressDeadlineAnnotation]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			n, nerr := strconv.Atoi(v)
			if nerr != nil || n <= 0 {
				return opts, fmt.Errorf("%s %q: want a duration (10m) or seconds", ProgressDeadlineAnnotation, v)
			}
			d = time.Duration(n) * time.Second
		}
		opts.ProgressDeadline = d
	}
	return opts, nil
}

func (e *Engine) workloadFor(change diff.Change, target Target) (workload, error) {
	switch change.Ref.GroupKind() {
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		return &deployment{e: e, change: change, target: target}, nil
	case schema.GroupKind{Group: "apps", Kind: "StatefulSet"}:
		return &statefulSet{e: e, change: change, target: target}, nil
	case schema.GroupKind{Group: "apps", Kind: "DaemonSet"}:
		return &daemonSet{e: e, change: change, target: target}, nil
	case schema.GroupKind{Kind: "Pod"}:
		return &barePod{e: e, change: change}, nil
	}
	return nil, fmt.Errorf("%s: kind %s cannot be updated in place", change.Ref, change.Ref.Kind)
}

// applyObject writes obj with server-side apply as refit.
func (e *Engine) applyObject(ctx context.Context, gvr schema.GroupVersionResource, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	obj = obj.DeepCopy()
	obj.SetResourceVersion("")
	obj.SetManagedFields(nil)
	data, err := obj.MarshalJSON()
	if err != nil {
		return nil, err
	}
	force := true
	out, err := e.dyn.Resource(gvr).Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(), types.ApplyPatchType, data,
		metav1.PatchOptions{FieldManager: diff.FieldManager, Force: &force})
	if err != nil {
		return nil, fmt.Errorf("%s/%s/%s: apply: %w", obj.GetKind(), obj.GetNamespace(), obj.GetName(), err)
	}
	return out, nil
}

// withRecord returns a copy of desired carrying the rollout record.
func withRecord(desired *unstructured.Unstructured, rec rolloutRecord) (*unstructured.Unstructured, error) {
	obj := desired.DeepCopy()
	raw, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	ann := obj.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann[RolloutAnnotation] = string(raw)
	obj.SetAnnotations(ann)
	return obj, nil
}

// readRecord returns the live workload's rollout record, if it has one.
func readRecord(ann map[string]string) (rolloutRecord, bool) {
	var rec rolloutRecord
	raw, ok := ann[RolloutAnnotation]
	if !ok || json.Unmarshal([]byte(raw), &rec) != nil {
		return rec, false
	}
	return rec, true
}

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

	pdbAllowed int // cached for a second: passes run on every Pod event
	pdbRead    time.Time
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
	if err := r.w.check(ctx); err != nil {
		return true, r.fail(ctx, "", err.Error())
	}
	all, err := r.lister()
	if err != nil {
		return false, err
	}
	now := r.e.now()
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
			return true, r.fail(ctx, pod.Name, reason)
		}
		// A patched Pod is counted down from the patch on, before the
		// kubelet has even killed its container: it is about to go down.
		// So is one patched for an earlier target (a re-targeted rollout)
		// whose restart has not happened yet.
		available := PodAvailable(pod, r.w.minReadySeconds(), now) && phase != PhaseRestarting && !RestartPending(pod)
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
		return true, r.fail(ctx, "", fmt.Sprintf("no Pod finished updating within the progress deadline of %s (%d of %d done)", deadline, done, len(candidates)))
	}
	if done == len(candidates) && len(r.pending) == 0 {
		if err := r.w.release(ctx); err != nil {
			return false, err
		}
		r.res.Outcome = Succeeded
		r.report(unavailable, maxUnavailable, nil)
		return true, nil
	}
	if now.Sub(r.pdbRead) > time.Second {
		if r.pdbAllowed, err = r.e.disruptionsAllowed(ctx, r.change.Ref.Namespace, all); err != nil {
			return false, err
		}
		r.pdbRead = now
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
			if ferr := r.fail(ctx, name, "the API server refused the image patch: "+err.Error()); ferr != nil {
				return ferr
			}
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
func (r *run) fail(ctx context.Context, pod, reason string) error {
	r.res.Outcome, r.res.FailedPod, r.res.Reason = Failed, pod, reason
	if r.change.Desired.GetAnnotations()[RollbackAnnotation] == "auto" {
		n, err := r.rollback(ctx)
		r.res.RolledBack = n
		if err != nil {
			r.res.Reason += "; rollback: " + err.Error()
		}
	}
	return nil
}

func (r *run) rollback(ctx context.Context) (int, error) {
	pods, err := r.lister()
	if err != nil {
		return 0, err
	}
	rec, _ := r.e.liveRecord(ctx, r.change)
	n := 0
	for _, pod := range pods {
		if !r.w.owns(pod) || !r.target.SpecAtTarget(pod) {
			continue
		}
		state, ok := ReadState(pod)
		if !ok || state.Revision != r.target.Revision {
			continue
		}
		patch, err := RevertPatch(pod, state, rec.Previous, r.e.now())
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

// liveRecord reads the rollout record from the live workload.
func (e *Engine) liveRecord(ctx context.Context, change diff.Change) (rolloutRecord, bool) {
	gvr, ok := resources[change.Ref.GroupKind()]
	if !ok {
		return rolloutRecord{}, false
	}
	live, err := e.dyn.Resource(gvr).Namespace(change.Ref.Namespace).Get(ctx, change.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return rolloutRecord{}, false
	}
	return readRecord(live.GetAnnotations())
}

var resources = map[schema.GroupKind]schema.GroupVersionResource{
	{Group: "apps", Kind: "Deployment"}:  {Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "apps", Kind: "StatefulSet"}: {Group: "apps", Version: "v1", Resource: "statefulsets"},
	{Group: "apps", Kind: "DaemonSet"}:   {Group: "apps", Version: "v1", Resource: "daemonsets"},
	{Kind: "Pod"}:                        {Version: "v1", Resource: "pods"},
}
