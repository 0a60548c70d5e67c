// Package reconcile drives one reconciliation of an app: render a checked-out
// revision, plan it against the cluster, apply what goes the ordinary way,
// and roll out image-only workload changes in place, falling back to the
// ordinary way when the in-place path's preconditions do not hold. It is the
// only package that wires the pipeline's stages together.
package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/render"
	"github.com/refit-gitops/refit/story"
)

// Options of one reconciliation. Start with DefaultOptions.
type Options struct {
	// App names the inventory: what this app applied, and may prune.
	App string
	// AppNamespace is the namespace of the app's App object, or refit's
	// own for a Config entry that names none: the namespace label of its
	// metrics.
	AppNamespace string
	// Path to build, relative to the revision's root.
	Path string
	// Namespace for namespaced objects that name none.
	Namespace     string
	DefaultPolicy diff.Policy
	Prune         bool
	// AllowEmpty lets a commit that renders nothing prune everything the
	// app applied (apply.Options.AllowEmpty).
	AllowEmpty bool
	// Wait for what was applied the ordinary way to be healthy.
	Wait    bool
	Timeout time.Duration
	// AllowRemoteBases lets kustomizations fetch remote bases.
	AllowRemoteBases bool
	InPlace          inplace.Options
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Story, if set, receives the events of the reconciliation (the
	// service logs them and the browser view draws them).
	Story story.Sink
	// Reads, when set, records the paths the render consulted.
	Reads *render.Reads
	// writesDone, when set, is called once Apply has written (or failed
	// to): a pool slot is given back before the health wait and rollouts.
	writesDone func()
}

// DefaultOptions prune, wait five minutes, and roll image-only changes out
// in place.
func DefaultOptions() Options {
	return Options{
		App: "default", Path: ".", Namespace: "default", DefaultPolicy: diff.InPlaceIfPossible,
		Prune: true, Wait: true, Timeout: 5 * time.Minute, InPlace: inplace.DefaultOptions(),
	}
}

// Reconciler reconciles apps into one cluster, making every request
// through one rest.Config: refit's own identity, or an app's (see For).
type Reconciler struct {
	planner *diff.Planner
	applier applier
	engine  roller
	gates   gateKeeper
	metrics *metrics
	events  record.EventRecorder
	// base is the engine whose bookkeeping For shares.
	base *inplace.Engine
	// access refuses a commit holding objects the impersonated identity
	// may not write; nil when refit acts as itself.
	access *accessCheck
	// inventoryNamespace holds the apps' inventories ("": apply's default).
	inventoryNamespace string
}

// gateKeeper keeps the readiness gate open on the Pods of gated workloads
// (*inplace.GateKeeper).
type gateKeeper interface {
	Set(app string, workloads []*unstructured.Unstructured)
	Run(ctx context.Context)
}

// applier is what the reconciler needs of apply (*apply.Applier).
type applier interface {
	Apply(ctx context.Context, plan *diff.Plan, opts apply.Options) (*apply.Result, error)
	WaitHealthy(ctx context.Context, plan *diff.Plan, res *apply.Result, opts apply.Options) error
	Inventory(ctx context.Context, app string) ([]diff.Ref, error)
	Claims(ctx context.Context, plan *diff.Plan, app string) error
	Forget(ctx context.Context, app string) error
}

// roller is what the reconciler needs of the in-place engine
// (*inplace.Engine).
type roller interface {
	Rollout(ctx context.Context, change diff.Change, opts inplace.Options) (inplace.Result, error)
	Precheck(ctx context.Context, change diff.Change) (string, error)
	DropExtras(ctx context.Context, change diff.Change) error
}

var (
	_ applier    = (*apply.Applier)(nil)
	_ roller     = (*inplace.Engine)(nil)
	_ gateKeeper = (*inplace.GateKeeper)(nil)
)

// Option sets an optional dependency of the Reconciler.
type Option func(*Reconciler)

// WithMetrics registers refit's metrics with reg.
func WithMetrics(reg prometheus.Registerer) Option {
	return func(r *Reconciler) { r.metrics = newMetrics(reg) }
}

// WithEvents records Kubernetes Events on the workloads refit updates in
// place.
func WithEvents(rec record.EventRecorder) Option {
	return func(r *Reconciler) { r.events = rec }
}

// WithInventoryNamespace keeps the apps' inventories in ns instead of
// refit-system: under an app's own identity, its namespace, where that
// identity may write them.
func WithInventoryNamespace(ns string) Option {
	return func(r *Reconciler) { r.inventoryNamespace = ns }
}

// New returns a Reconciler for the cluster cfg points at. Every request it
// makes (reads, dry-runs, writes, prunes, Pod patches, gates, health) goes
// through cfg: with cfg.Impersonate set, as that identity, and a commit
// holding an object that identity may not write is refused as a whole.
func New(cfg *rest.Config, opts ...Option) (*Reconciler, error) {
	engine, err := inplace.New(cfg)
	if err != nil {
		return nil, err
	}
	r := &Reconciler{}
	for _, o := range opts {
		o(r)
	}
	return r.build(cfg, engine)
}

// For returns a Reconciler that makes every request through cfg (an app's
// own identity: refit's config with Impersonate set) and shares r's
// metrics, events (unless opts say otherwise) and in-place bookkeeping,
// so that rollouts of apps with different identities still respect one
// another's Pods and PodDisruptionBudgets. opts must not register metrics
// again.
func (r *Reconciler) For(cfg *rest.Config, opts ...Option) (*Reconciler, error) {
	if r.base == nil {
		return nil, errors.New("reconciler: no engine to share")
	}
	engine, err := r.base.For(cfg)
	if err != nil {
		return nil, err
	}
	n := &Reconciler{metrics: r.metrics, events: r.events}
	for _, o := range opts {
		o(n)
	}
	return n.build(cfg, engine)
}

func (r *Reconciler) build(cfg *rest.Config, engine *inplace.Engine) (*Reconciler, error) {
	planner, err := diff.NewPlanner(cfg)
	if err != nil {
		return nil, err
	}
	var ao []apply.Option
	if r.inventoryNamespace != "" {
		ao = append(ao, apply.WithInventoryNamespace(r.inventoryNamespace))
	}
	applier, err := apply.New(cfg, ao...)
	if err != nil {
		return nil, err
	}
	if cfg.Impersonate.UserName != "" {
		if r.access, err = newAccessCheck(cfg); err != nil {
			return nil, err
		}
	}
	r.planner, r.applier, r.engine, r.base, r.gates = planner, applier, engine, engine, inplace.NewGateKeeper(engine)
	return r, nil
}

// Plan renders root/opts.Path and plans it against the cluster, with the
// app's inventory for deletions. Workloads whose in-place path does not
// hold are planned as recreations, with the reason.
func (r *Reconciler) Plan(ctx context.Context, root string, opts Options) (*diff.Plan, error) {
	objs, err := render.Render(ctx, render.Options{Root: root, Path: opts.Path, AllowRemoteBases: opts.AllowRemoteBases, Reads: opts.Reads})
	if err != nil {
		return nil, &BadCommitError{Err: err}
	}
	desired := make([]diff.Desired, len(objs))
	for i, o := range objs {
		desired[i] = diff.Desired{Object: o.Unstructured, Source: o.File}
	}
	if r.access != nil {
		// Before the inventory, the dry-runs and anything else: a commit
		// that reaches beyond its identity is refused whole, naming every
		// object it may not write.
		if err := r.access.check(ctx, desired, opts.Namespace); err != nil {
			return nil, err
		}
	}
	previous, err := r.applier.Inventory(ctx, opts.App)
	if err != nil {
		return nil, err
	}
	po := diff.DefaultOptions()
	po.Namespace, po.DefaultPolicy, po.Previous = opts.Namespace, opts.DefaultPolicy, previous
	plan, err := r.planner.Plan(ctx, desired, po)
	if err != nil {
		return nil, err
	}
	for i := range plan.Changes {
		c := &plan.Changes[i]
		if c.Path != diff.PathInPlace {
			continue
		}
		reason, err := r.engine.Precheck(ctx, *c)
		if err != nil {
			return nil, err
		}
		if reason == "" {
			continue
		}
		why := "in place not possible: " + reason
		if inplace.InProgress(*c) {
			// The apply releases the hold of the rollout under way.
			why += "; the in-place rollout under way ends and the controller replaces the Pods under its own strategy"
		}
		c.Path, c.Reason = diff.PathRecreate, why
	}
	return plan, nil
}

// Claims returns the refusal Apply would make of plan's objects that
// another app applied or that are refit's own state (for `refit plan`).
func (r *Reconciler) Claims(ctx context.Context, plan *diff.Plan, app string) error {
	return r.applier.Claims(ctx, plan, app)
}

// Result of Apply.
type Result struct {
	Apply    *apply.Result
	Rollouts []inplace.Result
}

// Failed reports whether anything failed: an in-place rollout, or health.
func (r *Result) Failed() bool {
	if r.Apply != nil && r.Apply.Health == apply.Unhealthy {
		return true
	}
	for _, ro := range r.Rollouts {
		if ro.Outcome != inplace.Succeeded {
			return true
		}
	}
	return false
}

// Apply carries out a plan: the ordinary changes first (validated as a
// whole before anything is written), then, as soon as those writes are
// done, the in-place rollouts, one goroutine per workload, while the health
// of what was applied is waited for (Options.Wait) at the same time. It
// also continues in-place rollouts that an earlier refit left unfinished,
// and hands the app's gated workloads to the gate keeper (see KeepGates).
func (r *Reconciler) Apply(ctx context.Context, plan *diff.Plan, opts Options) (*Result, error) {
	log := &lockedWriter{w: opts.Log} // rollouts and the health wait run concurrently
	var rollouts []diff.Change
	for _, c := range plan.Changes {
		switch {
		case c.Path == diff.PathInPlace:
			rollouts = append(rollouts, c)
		case c.Action == diff.Unchanged && diff.IsWorkload(c.Ref.GroupKind()) && inplace.InProgress(c):
			log.printf("%s: continuing an unfinished in-place rollout", c.Ref)
			rollouts = append(rollouts, c)
		}
	}
	if r.gates != nil {
		r.gates.Set(opts.App, gatedWorkloads(plan))
	}
	tellFallbacks(plan, opts, tellers(opts, log))

	ao := apply.DefaultOptions()
	ao.App, ao.Prune, ao.Timeout, ao.AllowEmpty = opts.App, opts.Prune, opts.Timeout, opts.AllowEmpty
	if opts.Log != nil {
		ao.Progress = apply.ProgressTo(log)
	}
	res := &Result{}
	var err error
	res.Apply, err = r.applier.Apply(ctx, plan, ao)
	if opts.writesDone != nil {
		opts.writesDone()
	}
	if err != nil {
		return res, err
	}
	if err := dropExtras(ctx, r.engine, plan); err != nil {
		return res, err
	}
	// The writes are done: the rollouts start now, not after the health of
	// unrelated objects (up to the timeout).
	var healthErr error
	healthDone := make(chan struct{})
	go func() {
		defer close(healthDone)
		if opts.Wait {
			healthErr = r.waitHealthy(ctx, plan, res.Apply, rollouts, ao)
		}
	}()
	var errs []error
	res.Rollouts, errs = r.rollOut(ctx, rollouts, opts, log)
	<-healthDone
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	return res, healthErr
}

// waitHealthy waits for the health of what res applied, except the
// workloads the in-place engine rolls out: their rollout's outcome says how
// they are (a failed rollout would otherwise hold the wait until its
// timeout).
func (r *Reconciler) waitHealthy(ctx context.Context, plan *diff.Plan, res *apply.Result, rollouts []diff.Change, ao apply.Options) error {
	engine := make(map[diff.Ref]bool, len(rollouts))
	for _, c := range rollouts {
		engine[c.Ref] = true
	}
	waited := &apply.Result{}
	var index []int
	for i, o := range res.Objects {
		if !engine[o.Ref] {
			waited.Objects = append(waited.Objects, o)
			index = append(index, i)
		}
	}
	err := r.applier.WaitHealthy(ctx, plan, waited, ao)
	for j, i := range index {
		res.Objects[i] = waited.Objects[j]
	}
	res.Health = waited.Health
	return err
}

// rollOut runs the in-place rollouts, one goroutine per workload, and
// tells their story to opts.Story and, as lines, to opts.Log.
func (r *Reconciler) rollOut(ctx context.Context, rollouts []diff.Change, opts Options, log *lockedWriter) ([]inplace.Result, []error) {
	results := make([]inplace.Result, len(rollouts))
	errs := make([]error, len(rollouts))
	sink := tellers(opts, log)
	var wg sync.WaitGroup
	for i, c := range rollouts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := rolloutTeller{sink: sink, app: opts.App, change: c, now: time.Now}
			io := opts.InPlace
			io.Progress = func(p inplace.Progress) {
				t.progress(p)
				if p.Start && !p.RollingBack {
					r.event(c, corev1.EventTypeNormal, "InPlaceStarted", imagesOf(c))
				}
				if len(p.Patched) > 0 {
					r.event(c, corev1.EventTypeNormal, "InPlaceBatch", fmt.Sprintf("batch %d, %d/%d updated, %d/%d unavailable%s",
						p.Batch, p.Updated, p.Total, p.Unavailable, p.MaxUnavailable, patchedList(p.Patched)))
				}
			}
			results[i], errs[i] = r.engine.Rollout(ctx, c, io)
			if errs[i] != nil {
				return
			}
			ro := results[i]
			t.result(ro)
			r.metrics.rollout(opts.appID(), ro)
			switch ro.Outcome {
			case inplace.Succeeded:
				r.event(c, corev1.EventTypeNormal, "InPlaceSucceeded", describe(ro))
			case inplace.Failed:
				r.event(c, corev1.EventTypeWarning, "InPlaceFailed", describe(ro))
			default:
				r.event(c, corev1.EventTypeNormal, "InPlaceFallback", describe(ro))
			}
		}()
	}
	wg.Wait()
	return results, errs
}

// tellers are where a reconciliation's story goes: opts.Story, and the
// CLI's lines when there is a writer for them.
func tellers(opts Options, log *lockedWriter) story.Sink {
	sinks := story.Sinks{opts.Story}
	if log.w != nil {
		sinks = append(sinks, lineSink{w: log})
	}
	return sinks
}

// dropExtras deletes the extra Pods an interrupted surge rollout left on
// the workloads that now go the ordinary way.
func dropExtras(ctx context.Context, engine roller, plan *diff.Plan) error {
	for _, c := range plan.Changes {
		if c.Action == diff.Update && c.Path == diff.PathRecreate && diff.IsWorkload(c.Ref.GroupKind()) {
			if err := engine.DropExtras(ctx, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// tellFallbacks tells the workloads the plan sends the ordinary way
// although their policy prefers in place (a structural change, or the
// in-place path's preconditions do not hold), with the plan's reason.
func tellFallbacks(plan *diff.Plan, opts Options, sink story.Sink) {
	for _, c := range plan.Changes {
		if c.Action != diff.Update || c.Path != diff.PathRecreate || !diff.IsWorkload(c.Ref.GroupKind()) || c.Reason == "" {
			continue
		}
		sink.Emit(story.Event{Time: time.Now(), Kind: story.Fallback, App: opts.App, Workload: c.Ref, Reason: c.Reason})
	}
}

// lockedWriter serialises the progress lines of concurrent rollouts and of
// the health wait; a nil writer discards them.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	if l.w == nil {
		return len(p), nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) printf(format string, args ...any) {
	fmt.Fprintf(l, format+"\n", args...)
}

func patchedList(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf(", patching %v", names)
}

// imagesOf is the line (and Kubernetes Event) a rollout starts with.
func imagesOf(c diff.Change) string {
	if len(c.Images) == 0 && c.Reason != "" {
		return c.Reason // a change under a rollout that leaves the images alone
	}
	return startLine(story.Event{Images: imagesOfChange(c), Reason: extrasOf(c)})
}

// describe is how a rollout ended, as the CLI's line and the Kubernetes
// Event say it.
func describe(r inplace.Result) string {
	return endLine(endedEvent(r))
}

// event records a Kubernetes Event on the change's workload.
func (r *Reconciler) event(c diff.Change, eventType, reason, msg string) {
	if r.events == nil {
		return
	}
	ref := &corev1.ObjectReference{
		Kind: c.Ref.Kind, APIVersion: schema.GroupVersion{Group: c.Ref.Group, Version: c.Ref.Version}.String(),
		Namespace: c.Ref.Namespace, Name: c.Ref.Name,
	}
	if c.Live != nil {
		ref.UID, ref.ResourceVersion = c.Live.GetUID(), c.Live.GetResourceVersion()
	}
	r.events.Event(ref, eventType, reason, msg)
}

// KeepGates keeps refit's readiness gate open on the Pods of the gated
// workloads of every app Apply has seen (new Pods, and Pods whose gate was
// left False), from a watch, until ctx ends. Run it while rollouts may run
// and only where refit may write (the leader).
func (r *Reconciler) KeepGates(ctx context.Context) {
	if r.gates != nil {
		r.gates.Run(ctx)
	}
}

// gatedWorkloads are the plan's workloads as Git has them, with their
// namespace; the gate keeper keeps those whose template lists the gate.
func gatedWorkloads(plan *diff.Plan) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, c := range plan.Changes {
		if c.Desired != nil && diff.IsWorkload(c.Ref.GroupKind()) {
			obj := c.Desired.DeepCopy()
			obj.SetNamespace(c.Ref.Namespace)
			out = append(out, obj)
		}
	}
	return out
}
