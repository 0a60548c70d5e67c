package apply

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/pkg/ssa"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"github.com/refit-gitops/refit/diff"
)

// Annotations read on the objects.
const (
	// ForceAnnotation set to "true" on an object in Git lets refit delete
	// and create it again when a change touches an immutable field.
	ForceAnnotation = diff.ForceAnnotation
	// PruneAnnotation set to "disabled" on a live object keeps it when it
	// leaves Git.
	PruneAnnotation = "refit.dev/prune"
	PruneDisabled   = "disabled"
)

// Options are per-apply settings. Start with DefaultOptions.
type Options struct {
	// App names the inventory (required): what this apply records, and the
	// only objects its pruning may delete.
	App string
	// Prune deletes the plan's Delete changes (objects that left Git).
	Prune bool
	// Wait waits until what Git holds is healthy (kstatus Current).
	Wait bool
	// Timeout bounds the health wait, the wait for new definitions to be
	// established, and the deletion of a forced object.
	Timeout time.Duration
	// Interval is how often health is polled.
	Interval time.Duration
	// Force recreates every object whose change touches an immutable field,
	// as the refit.dev/force annotation does for one object.
	Force bool
	// InPlaceAsRecreate applies the plan's in-place workload updates as
	// ordinary updates (the workload controllers replace the Pods).
	InPlaceAsRecreate bool
	// Revalidate dry-runs again the objects the plan already dry-ran, just
	// before writing: for a plan that may be stale.
	Revalidate bool
	// Concurrency bounds the requests in flight.
	Concurrency int
	// AllowEmpty lets a render with no objects prune everything the app
	// applied before. Without it such an apply stops with ErrEmptyRender:
	// a path renamed, a kustomization that lost its resources or a broken
	// generator all render nothing, and pruning on that would delete the
	// whole app (flux2#3316).
	AllowEmpty bool
	// Progress, if set, receives one event per object written, deleted or
	// skipped, and per change of health while waiting. Calls are
	// serialised.
	Progress func(Event)
}

// DefaultOptions prune, do not wait, and give the health wait five minutes.
func DefaultOptions() Options {
	return Options{Prune: true, Timeout: 5 * time.Minute, Interval: time.Second, Concurrency: 8}
}

func (o *Options) check() error {
	if err := checkApp(o.App); err != nil {
		return fmt.Errorf("options: %w", err)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultOptions().Timeout
	}
	if o.Interval <= 0 {
		o.Interval = DefaultOptions().Interval
	}
	if o.Concurrency < 1 {
		o.Concurrency = 1
	}
	return nil
}

// Applier applies plans to one cluster.
//
// It uses fluxcd/pkg/ssa for ordering (ReconcileOrder), for waiting on
// definitions (WaitForSet), for pruning (Delete with the exclusion
// annotation) and kstatus for health, but writes objects itself rather
// than through ResourceManager.ApplyAllStaged: the plan already holds each
// object's server-side dry-run, so ssa's GET + dry-run per object would
// triple the requests; and ApplyAllStaged writes its first stage before it
// dry-runs the second, where refit validates everything it can before any
// write and rolls the first stage back if the rest is refused.
type Applier struct {
	client             client.Client
	manager            *ssa.ResourceManager
	poller             *polling.StatusPoller
	inventoryNamespace string
	// inventoryNamespaceSeen: the inventory namespace was found or made.
	inventoryNamespaceSeen atomic.Bool
	// index is what the inventories say, for the ownership check.
	index *inventoryIndex
	// typed watches the inventories (WatchInventories).
	typed kubernetes.Interface
}

// Option configures New.
type Option func(*settings)

type settings struct {
	inventoryNamespace string
	qps                float32
	burst              int
}

// WithInventoryNamespace stores the inventories in ns instead of
// refit-system.
func WithInventoryNamespace(ns string) Option {
	return func(s *settings) { s.inventoryNamespace = ns }
}

// WithRateLimit sets the client's rate limit, overriding the config's.
func WithRateLimit(qps float32, burst int) Option {
	return func(s *settings) { s.qps, s.burst = qps, burst }
}

// Client-go's own default (5 requests/s, burst 10) would make a
// 1,000-object apply take minutes: when the config sets no limit, use these.
const (
	defaultQPS   = 50
	defaultBurst = 100
)

// New returns an Applier for the cluster cfg points at.
func New(cfg *rest.Config, opts ...Option) (*Applier, error) {
	s := settings{inventoryNamespace: DefaultInventoryNamespace}
	for _, o := range opts {
		o(&s)
	}
	cfg = rest.CopyConfig(cfg)
	switch {
	case s.qps != 0:
		cfg.QPS, cfg.Burst = s.qps, s.burst
	case cfg.QPS == 0 && cfg.RateLimiter == nil:
		cfg.QPS, cfg.Burst = defaultQPS, defaultBurst
	}
	if cfg.WarningHandler == nil && cfg.WarningHandlerWithContext == nil {
		cfg.WarningHandlerWithContext = contextWarnings{}
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Host, err)
	}
	// The dynamic mapper discovers a kind on first use, so custom resources
	// whose CRD this apply creates are found once it is established.
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Host, err)
	}
	// A logger of our own: controller-runtime's global one complains on
	// stderr, with a stack trace, when a program never sets it.
	c, err := client.New(cfg, client.Options{HTTPClient: httpClient, Mapper: mapper, Log: funcr.New(func(string, string) {}, funcr.Options{})})
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Host, err)
	}
	poller := newPoller(c, mapper)
	typed, err := kubernetes.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Host, err)
	}
	return &Applier{
		index:              newInventoryIndex(),
		typed:              typed,
		client:             c,
		manager:            ssa.NewResourceManager(c, poller, ssa.Owner{Field: diff.FieldManager, Group: "refit.dev"}),
		poller:             poller,
		inventoryNamespace: s.inventoryNamespace,
	}, nil
}

// contextWarnings hands the API server's warnings (a deprecated API
// version, an unknown field) to the logger of the request's context.
type contextWarnings struct{}

func (contextWarnings) HandleWarningHeaderWithContext(ctx context.Context, code int, _, text string) {
	if code == 299 && text != "" {
		logr.FromContextOrDiscard(ctx).Info("warning from the API server", "warning", text)
	}
}

// Log keys.
const (
	keyObject  = "object"
	keyAction  = "action"
	keySummary = "summary"
)

// run is the state of one Apply.
type run struct {
	a        *Applier
	opts     Options
	log      logr.Logger
	progress progress
	// ttlJobs are Jobs that delete themselves when done: gone is healthy.
	ttlJobs map[diff.Ref]bool

	// owned is the app's inventory (unversioned): the only objects force
	// may delete and prune may remove.
	owned map[diff.Ref]bool
	// owners is what the other apps' inventories list.
	owners owners

	mu      sync.Mutex
	result  Result
	written []diff.Ref // what was written, for a partial inventory
}

func (r *run) record(o ObjectResult) {
	r.mu.Lock()
	r.result.Objects = append(r.result.Objects, o)
	switch o.Action {
	case Created, Configured, Recreated:
		r.written = append(r.written, o.Ref)
	}
	r.mu.Unlock()
	r.log.V(1).Info("object", keyObject, o.Ref.String(), keyAction, string(o.Action))
	if o.Action != Unchanged { // a thousand "unchanged" lines would hide what happened
		r.progress.emit(Event{Ref: o.Ref, Action: o.Action, Message: o.Reason})
	}
}

// Apply writes plan to the cluster:
//
//  0. nothing is written if the plan holds refit's own state, an object
//     another app's inventory lists, or nothing at all while pruning
//     would delete what the app applied before (ErrEmptyRender);
//  1. every object the plan could not dry-run is dry-run now, unless its
//     Namespace or CRD comes with the plan; any failure stops everything;
//  2. the CRDs and Namespaces this plan creates for objects that could not
//     be dry-run without them are applied and waited for;
//  3. those objects are dry-run; a failure deletes what step 2 created and
//     stops;
//  4. the Roles and ClusterRoles this plan creates for bindings that name
//     them are applied, then those bindings are dry-run; a failure deletes
//     what steps 2 and 4 created;
//  5. everything is validated: the other definitions (waited for), the
//     other roles, then everything else are applied with server-side
//     apply, kind by kind;
//  6. objects that left Git are pruned, in reverse order;
//  7. the inventory is updated;
//  8. with Options.Wait, Apply waits until everything in Git is healthy.
//
// The Result lists every change with what was done. A *ValidationError
// means nothing was written (a bad commit); a *HealthError that everything
// was written but is not healthy; other errors are the cluster's.
func (a *Applier) Apply(ctx context.Context, plan *diff.Plan, opts Options) (*Result, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	log := logr.FromContextOrDiscard(ctx) // the caller's logger names the app
	r := &run{a: a, opts: opts, log: log, progress: progress{fn: opts.Progress}, ttlJobs: jobsWithTTL(plan)}
	w := sortPlan(plan, opts)

	owned, err := a.Inventory(ctx, opts.App)
	if err != nil {
		return nil, err
	}
	r.owned = make(map[diff.Ref]bool, len(owned))
	for _, ref := range owned {
		r.owned[unversioned(ref)] = true
	}
	r.owners = a.otherInventories(ctx, opts.App, plan, true)
	defer a.index.release(a.inventoryNamespace, opts.App) // unless the inventory was written
	for _, u := range r.owners.unreadable {
		log.Info("another app's inventory is unreadable: it does not block this app, but no Namespace or CRD is pruned meanwhile", "inventory", u)
	}
	if err := r.checkOwnership(plan, w); err != nil {
		return &r.result, err
	}
	if err := r.validate(ctx, w.earlyValidation()); err != nil {
		return &r.result, err
	}
	// Only what the remaining validation needs is written before it, and
	// deleted again if it fails; the rest of the definitions and roles
	// wait until everything is validated.
	defs, laterDefs := needed(w.stages[stageDefinitions], w.deferredValidation())
	roles, laterRoles := needed(w.stages[stageRoles], w.afterRolesValidation())
	if err := r.writeStage(ctx, defs); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	if err := r.waitDefinitions(ctx, defs, w); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	if err := r.validate(ctx, w.deferredValidation()); err != nil {
		return &r.result, r.rollBack(ctx, err, defs)
	}
	if err := r.writeStage(ctx, roles); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	if err := r.validate(ctx, w.afterRolesValidation()); err != nil {
		return &r.result, r.rollBack(ctx, err, append(slices.Clone(defs), roles...))
	}
	// Everything is validated: from here on, a failure is the cluster's.
	if err := r.writeStage(ctx, laterDefs); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	if err := r.waitDefinitions(ctx, laterDefs, w); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	if err := r.writeStage(ctx, laterRoles); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	if err := r.writeStage(ctx, w.stages[stageResources]); err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	kept, err := r.prune(ctx, w.prunes, owned, w.desired)
	if err != nil {
		return &r.result, r.saveAfterFailure(ctx, owned, err)
	}
	for _, o := range w.reported {
		r.record(o)
	}
	if err := r.saveInventory(ctx, owned, nextInventory(w.desired, kept)); err != nil {
		return &r.result, err
	}
	log.Info("applied", keySummary, r.result.Summary())
	if !opts.Wait {
		return &r.result, nil
	}
	return &r.result, r.waitHealthy(ctx)
}

func (w *work) earlyValidation() []*item {
	var out []*item
	for _, s := range w.stages {
		for _, it := range s {
			if it.validate && !it.deferred && !it.afterRoles {
				out = append(out, it)
			}
		}
	}
	return out
}

func (w *work) deferredValidation() []*item {
	var out []*item
	for _, s := range []stage{stageRoles, stageResources} {
		for _, it := range w.stages[s] {
			if it.deferred {
				out = append(out, it)
			}
		}
	}
	return out
}

// afterRolesValidation are the bindings of roles this plan creates.
func (w *work) afterRolesValidation() []*item {
	var out []*item
	for _, it := range w.stages[stageResources] {
		if it.afterRoles {
			out = append(out, it)
		}
	}
	return out
}

// checkOwnership refuses, before anything is written, a plan that holds
// refit's own state or objects of another app, and an empty render that
// would prune the whole app.
func (r *run) checkOwnership(plan *diff.Plan, w *work) error {
	if err := refuseClaims(plan, r.owners.others); err != nil {
		return err
	}
	return emptyRender(r.opts, len(w.desired), len(w.prunes))
}

// refuseClaims refuses the objects of plan that are refit's own state or
// that another app's inventory lists.
func refuseClaims(plan *diff.Plan, others map[diff.Ref]string) error {
	refused := refitState(plan.Changes)
	var desired []*diff.Change
	for i := range plan.Changes {
		if plan.Changes[i].Action != diff.Delete {
			desired = append(desired, &plan.Changes[i])
		}
	}
	refused = append(refused, claimedByOthers(desired, others)...)
	if len(refused) > 0 {
		return &ValidationError{Objects: refused}
	}
	return nil
}

// Claims returns the refusal Apply makes, before any write, of the objects
// of plan that another app's inventory lists or that are refit's own
// state, so that a plan says it too; nil when there is none.
func (a *Applier) Claims(ctx context.Context, plan *diff.Plan, app string) error {
	return refuseClaims(plan, a.otherInventories(ctx, app, plan, false).others)
}

// EmptyRender returns the error Apply stops with, before any write, when
// plan holds no object from Git and pruning with opts would delete what
// the app applied before; nil otherwise. A plan uses it to say so too.
func EmptyRender(plan *diff.Plan, opts Options) error {
	var desired, prunes int
	for _, c := range plan.Changes {
		if c.Action == diff.Delete {
			prunes++
		} else {
			desired++
		}
	}
	return emptyRender(opts, desired, prunes)
}

// ErrEmptyRender: the commit renders no object, and pruning would delete
// everything the app applied before.
var ErrEmptyRender = errors.New("the render is empty")

// emptyRender stops an apply of nothing that would prune existing objects,
// unless the app allows it.
func emptyRender(opts Options, desired, prunes int) error {
	if desired > 0 || prunes == 0 || !opts.Prune || opts.AllowEmpty {
		return nil
	}
	return fmt.Errorf("app %s: %w, but %d objects the app applied before still exist: pruning would delete them all, so nothing was done "+
		"(a wrong path, or a kustomization that lost its resources, renders nothing; to empty the app on purpose, allow an empty render)",
		opts.App, ErrEmptyRender, prunes)
}

// saveInventory writes the inventory. It writes it even when the entries
// did not change: the write also restores the labels that mark it as the
// app's own, and a lost write must not wait for the next change.
func (r *run) saveInventory(ctx context.Context, _, next []diff.Ref) error {
	return r.a.writeInventory(ctx, r.opts.App, next)
}

// saveAfterFailure records what a failed apply wrote on top of the old
// inventory: nothing is dropped (that needs a successful apply), but an
// object created before the failure must not escape a later pruning.
func (r *run) saveAfterFailure(ctx context.Context, old []diff.Ref, cause error) error {
	r.mu.Lock()
	written := append([]diff.Ref{}, r.written...)
	r.mu.Unlock()
	if len(written) == 0 {
		return cause
	}
	if err := r.saveInventory(ctx, old, nextInventory(old, written)); err != nil {
		return errors.Join(cause, err)
	}
	return cause
}

// forEach calls fn for 0..n-1 with at most limit calls at a time.
func forEach(n, limit int, fn func(i int)) {
	sem := make(chan struct{}, limit)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(i)
		}()
	}
	wg.Wait()
}

// ssaApply writes obj with server-side apply as refit, taking over fields
// other managers own (as Flux does: Git wins), and returns what the server
// made of it.
func (a *Applier) ssaApply(ctx context.Context, obj *unstructured.Unstructured, opts ...client.ApplyOption) (*unstructured.Unstructured, error) {
	obj = obj.DeepCopy()
	obj.SetManagedFields(nil)
	obj.SetResourceVersion("")
	err := a.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj),
		append([]client.ApplyOption{client.ForceOwnership, client.FieldOwner(diff.FieldManager)}, opts...)...)
	return obj, err
}
