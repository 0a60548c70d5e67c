package inplace

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

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
	// RolledBackAnnotation on the live workload names the images (a target
	// revision) that failed and were rolled back, with when and why.
	RolledBackAnnotation = diff.RolledBackAnnotation
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
	FailedPod string
	Updated   int
	Total     int
	// RolledBack Pods were patched back to their images from before the
	// rollout (refit.dev/rollback: auto); RollbackComplete when every Pod
	// and the template are back.
	RolledBack       int
	RollbackComplete bool
	MaxObserved      int // the most Pods seen unavailable at once
	Duration         time.Duration
	// Requests refit sent to the API server for this rollout (its rollback
	// included), and the time they waited on the client-side rate limit.
	Requests      int
	RateLimitWait time.Duration
}

// Progress is reported once a run knows its Pods (Start), when a gated
// batch starts draining, and after every pass that changed something.
type Progress struct {
	Ref            diff.Ref
	Batch          int
	Updated, Total int
	Unavailable    int
	MaxUnavailable int
	Patched        []string
	// RollingBack: the batch puts Pods back on their previous images.
	RollingBack bool
	// Draining are Pods of the batch whose gate was just set False: they
	// wait out the grace before their patch (Patched is then empty).
	Draining []string
	// Start: the first report of a run (of the rollout, or of its
	// rollback), once its Pods are known; nothing was patched yet.
	Start bool
	// Pods are every eligible Pod of the rollout and where it stands.
	Pods []PodProgress
	// Pull, if set, is a report of the pre-pull phase (and nothing else).
	Pull *PullProgress
}

// PodProgress is one Pod's place in a rollout.
type PodProgress struct {
	Name  string
	Phase Phase
	// Draining: an old Pod this rollout took out of its endpoints (gate
	// False) and is about to patch.
	Draining bool
	// Reason a Failed Pod failed.
	Reason string
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
	// RetryRolledBack tries images again that failed and were rolled back
	// (RolledBackAnnotation); without it such a rollout fails at once,
	// touching nothing. A by-hand apply sets it; the service does not.
	RetryRolledBack bool
	// Progress, if set, receives progress reports.
	Progress func(Progress)
	// PrePull: how the nodes get the new images before Pods are patched.
	PrePull PrePullOptions
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
	busy   *busyPods
	// pdbLocks serialise PDB decisions per namespace across rollouts (of
	// every identity: see For).
	pdbLocks *namespaceLocks
	// pulling are the rollouts of this process that pre-pull now.
	pulling *activeRollouts
}

// New returns an Engine for the cluster cfg points at.
func New(cfg *rest.Config) (*Engine, error) {
	cfg = measured(cfg)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Engine{client: client, dyn: dyn, now: time.Now, busy: newBusyPods(), pdbLocks: &namespaceLocks{}, pulling: newActiveRollouts()}, nil
}

// workload is what differs between kinds: how to hold the controller's own
// rollout while refit patches Pods, and how to let go of it.
type workload interface {
	// precheck reads the live workload and says why the in-place path
	// cannot be taken, or "". It writes nothing. It leaves the rollout's
	// record (a new one, or the live one when resuming) in base.rec.
	precheck(ctx context.Context) (fallback string, err error)
	// prepare writes the new template with the hold (after precheck).
	prepare(ctx context.Context) error
	// refresh re-reads the live workload (its replicas may change, e.g. by
	// an HPA); an error stops the rollout (e.g. the controller started a
	// rollout of its own).
	refresh(ctx context.Context) error
	// owns tells the workload's current Pods from others matching the
	// selector (and, for a StatefulSet, from Pods outside its ordinals).
	owns(pod *corev1.Pod) bool
	// listOptions narrow the Pod watch to the workload's Pods.
	listOptions(o *metav1.ListOptions)
	// revisionLabels are written on every patched Pod.
	revisionLabels() map[string]string
	maxUnavailable() (int, error)
	// expected is how many Pods the workload should have.
	expected() int
	// eligible excludes Pods the rollout must not touch (a StatefulSet's
	// ordinals below the partition in Git).
	eligible(pod *corev1.Pod) bool
	ordinal(pod *corev1.Pod) int
	minReadySeconds() int32
	progressDeadline() time.Duration
	// release writes the workload as Git has it, ending the hold.
	release(ctx context.Context) error
	// record is the rollout's record, as precheck left it.
	record() *rolloutRecord
	// setTarget replaces the target with the images as admitted.
	setTarget(t Target)
}

// base is what every kind shares.
type base struct {
	e      *Engine
	change diff.Change
	target Target
	rec    rolloutRecord
}

func (b *base) record() *rolloutRecord { return &b.rec }
func (b *base) setTarget(t Target)     { b.target = t }

// Rollout updates the Pods of change's workload in place, or returns
// Fallback without changing anything when it cannot.
func (e *Engine) Rollout(ctx context.Context, change diff.Change, opts Options) (res Result, err error) {
	start := e.now()
	res.Ref = change.Ref
	spent := &cost{}
	ctx = withCost(ctx, spent)
	defer func() {
		res.Duration = e.now().Sub(start)
		res.Requests, res.RateLimitWait = spent.read()
	}()
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
	rollingBack := false
	if change.Live != nil {
		live, underway := readRecord(change.Live.GetAnnotations())
		rollingBack = underway && live.Failed != "" && live.Failed == target.Revision
	}
	if note, ok := readRolledBack(change.Live); ok && note.Revision == target.Revision && !rollingBack && !opts.RetryRolledBack {
		res.Outcome = Failed
		res.Reason = fmt.Sprintf("these images failed and were rolled back at %s (%s); they are not tried again until they change (or refit apply is run again)",
			note.At.Format(time.RFC3339), note.Reason)
		return res, nil
	}
	w, target, fallback, err := e.check(ctx, change, target)
	if err != nil {
		return res, err
	}
	if fallback != "" {
		res.Outcome, res.Reason = Fallback, fallback
		return res, nil
	}
	rollback := change.Desired.GetAnnotations()[RollbackAnnotation] == "auto"
	rec := w.record()
	if rec.Failed != "" && rec.Failed == target.Revision && rollback {
		// A refit stopped during a rollback of this very target: go on with it.
		res.Outcome, res.Reason = Failed, "rolled back after an earlier failure of the same images"
		err := e.rollback(ctx, change, *rec, opts, &res)
		return res, err
	}
	rec.Failed = ""
	target = rememberRemovals(rec, target)
	w.setTarget(target)
	if fallback, err = e.probeSurge(ctx, w, change); err != nil {
		return res, err
	} else if fallback != "" {
		res.Outcome, res.Reason = Fallback, fallback
		return res, nil
	}
	if err = w.prepare(ctx); err != nil {
		return res, err
	}
	r := newRun(e, w, change, target, opts, &res)
	if err = r.loop(ctx); err != nil {
		return res, err
	}
	if res.Outcome == Failed && rollback {
		rec.Failed = target.Revision
		err = e.rollback(ctx, change, *rec, opts, &res)
		return res, err
	}
	return res, nil
}

// check runs the kind's precheck and the admission check, and returns the
// workload with the target as the API server admits it.
func (e *Engine) check(ctx context.Context, change diff.Change, target Target) (workload, Target, string, error) {
	w, err := e.workloadFor(change, target)
	if err != nil {
		return nil, target, "", err
	}
	fallback, err := w.precheck(ctx)
	if err != nil || fallback != "" {
		return w, target, fallback, err
	}
	if reason := surgeRefused(change, target); reason != "" && surgeOf(w) != nil && !InProgress(change) {
		return w, target, reason, nil
	}
	admitted, fallback, err := e.admit(ctx, change.Ref, w, target)
	if err != nil || fallback != "" {
		return w, target, fallback, err
	}
	w.setTarget(admitted)
	return w, admitted, "", nil
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
	_, _, fallback, err := e.check(ctx, change, target)
	return fallback, err
}

// InProgress reports whether the live workload (change.Live, as the plan
// read it) carries the record of an in-place rollout that has not finished
// (refit stopped or failed during it): Rollout continues it.
//
// A bare Pod has no record of its own: it is in progress while a restart
// refit patched is pending, or while its readiness gate is not True (a refit
// stopped between the patch and opening the gate).
func InProgress(change diff.Change) bool {
	if change.Live == nil {
		return false
	}
	if change.Ref.GroupKind() == (schema.GroupKind{Kind: "Pod"}) {
		var pod corev1.Pod
		if runtime.DefaultUnstructuredConverter.FromUnstructured(change.Live.Object, &pod) != nil {
			return false
		}
		if _, ok := ReadState(&pod); !ok {
			return false
		}
		status, set := gateStatus(&pod)
		return RestartPending(&pod) || hasGate(change.Live) && (!set || status != corev1.ConditionTrue)
	}
	_, ok := readRecord(change.Live.GetAnnotations())
	return ok
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
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

func (e *Engine) workloadFor(change diff.Change, target Target) (workload, error) {
	b := base{e: e, change: change, target: target}
	switch change.Ref.GroupKind() {
	case schema.GroupKind{Group: "apps", Kind: "Deployment"}:
		return &deployment{base: b}, nil
	case schema.GroupKind{Group: "apps", Kind: "StatefulSet"}:
		return &statefulSet{base: b}, nil
	case schema.GroupKind{Group: "apps", Kind: "DaemonSet"}:
		return &daemonSet{base: b}, nil
	case schema.GroupKind{Kind: "Pod"}:
		return &barePod{base: b}, nil
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

var resources = map[schema.GroupKind]schema.GroupVersionResource{
	{Group: "apps", Kind: "Deployment"}:  {Group: "apps", Version: "v1", Resource: "deployments"},
	{Group: "apps", Kind: "StatefulSet"}: {Group: "apps", Version: "v1", Resource: "statefulsets"},
	{Group: "apps", Kind: "DaemonSet"}:   {Group: "apps", Version: "v1", Resource: "daemonsets"},
	{Kind: "Pod"}:                        {Version: "v1", Resource: "pods"},
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
