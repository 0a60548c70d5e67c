package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/shard"
	"github.com/refit-gitops/refit/source"
)

// Annotation and finalizer of App objects.
const (
	// reconcileAtAnnotation: a new value asks for a reconcile now (the
	// value is echoed in status.lastHandledReconcileAt once handled).
	reconcileAtAnnotation = "refit.dev/reconcile-at"
	// refreshTimeout bounds the poll a reconcile request waits for before
	// the App's loop starts (on the last commit seen, if the host is slow).
	refreshTimeout = 30 * time.Second
	// pruneFinalizer holds a deleted App until what it applied is pruned.
	pruneFinalizer = "refit.dev/prune"
)

var appsGVR = schema.GroupVersionResource{Group: v1alpha1.GroupVersion.Group, Version: v1alpha1.GroupVersion.Version, Resource: "apps"}

// appController runs the App objects of the cluster: each App is converted
// with config.FromObject and wired as a config entry would be; a change of
// its spec (generation) or of its reconcile-at annotation restarts its loop,
// suspend stops it, deletion stops it and prunes (finalizer).
type appController struct {
	dyn        dynamic.Interface
	core       corev1Getter
	namespace  string // "": all
	allowLocal bool
	wiring     *appWiring
	base       *reconcile.Reconciler
	recorder   record.EventRecorder
	member     *shard.Member // nil: not sharded, every App is ours
	// hooks serves the running Apps' webhooks (nil: no --listen).
	hooks *source.Receiver
	// shardHooks answers, sharded, the hooks of Apps other replicas run
	// (nil: not sharded, or no --listen).
	shardHooks *shardHooks

	// requeue asks for an App to be synced again (set by Run).
	requeue func(key string)

	mu      sync.Mutex
	running map[string]*runningApp
	wg      sync.WaitGroup
}

// corev1Getter reads Namespaces (is the App's namespace going away?).
type corev1Getter interface {
	GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error)
}

type runningApp struct {
	cancel context.CancelFunc
	done   chan struct{}
	// release lets go of the app's subscription to its repository, once
	// its loop has ended (nil: none).
	release func()
	gen     int64
	at      string
	// wake asks the app's poller to poll now (nil: none); pollAt is the
	// poll-at annotation last handled (pollAsked).
	wake   *source.Trigger
	pollAt string
	// rotated: the Git host refused the loop's credentials and the App's
	// Secrets now hold others; the loop restarts with them.
	rotated atomic.Bool
}

var _ reconcile.Controller = (*appController)(nil)

// Run watches App objects until ctx ends.
func (c *appController) Run(ctx context.Context, start reconcile.StartFunc) {
	log := logr.FromContextOrDiscard(ctx).WithName("apps")
	ctx = logr.NewContext(ctx, log)
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(c.dyn, 0, c.namespace, nil)
	inf := factory.ForResource(appsGVR).Informer()
	if err := inf.AddIndexers(cache.Indexers{byName: nameIndex}); err != nil {
		log.Error(err, "index App objects by name")
		return
	}
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			queue.Add(key)
		}
	}
	// An App gone frees its name: the Apps refused for it get another look.
	sameName := func(obj any) {
		enqueue(obj)
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if u, ok := obj.(*unstructured.Unstructured); ok {
			for _, a := range appsNamed(inf.GetIndexer(), u.GetName()) {
				if a.Namespace != u.GetNamespace() {
					queue.Add(a.Namespace + "/" + a.Name)
				}
			}
		}
	}
	_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: sameName,
	})
	c.requeue = queue.Add
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return
	}
	log.Info("watching App objects", "namespace", c.namespace)
	c.shardHooks.watch(ctx, inf.GetIndexer())
	leave := c.runShard(ctx, inf.GetIndexer(), queue)
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		key, quit := queue.Get()
		if quit {
			break
		}
		if err := c.sync(ctx, inf.GetIndexer(), key, start); err != nil {
			log.Error(err, "app not handled: retrying", "app", key)
			queue.AddRateLimited(key)
		} else {
			queue.Forget(key)
		}
		queue.Done(key)
	}
	c.mu.Lock()
	for key := range c.running {
		c.stopLocked(key)
	}
	c.mu.Unlock()
	c.wg.Wait()
	leave()
}

func (c *appController) sync(ctx context.Context, idx cache.Indexer, key string, start reconcile.StartFunc) error {
	item, exists, err := idx.GetByKey(key)
	if err != nil {
		return err
	}
	if !exists {
		c.stop(key)
		c.shardHooks.forget(key)
		return nil
	}
	obj, err := appOf(item)
	if err != nil {
		return err
	}
	at := obj.Annotations[reconcileAtAnnotation]
	if holder := nameHolder(obj.Name, appsNamed(idx, obj.Name)); holder != nil && (holder.Namespace != obj.Namespace) {
		c.stop(key)
		if obj.DeletionTimestamp != nil {
			// It never ran under this name: nothing of its own to prune
			// (the inventory of that name is the holder's).
			return c.patchFinalizers(ctx, obj, slices.DeleteFunc(slices.Clone(obj.Finalizers), func(f string) bool { return f == pruneFinalizer }))
		}
		msg := nameTaken(holder)
		return c.writeOwnedStatus(ctx, obj, v1alpha1.Sync{Generation: obj.Generation, Outcome: v1alpha1.BadCommit,
			Reason: "InvalidSpec", Message: msg, ReconcileAt: at}, func() { c.recorder.Event(obj, corev1.EventTypeWarning, "InvalidSpec", msg) })
	}
	c.mu.Lock()
	r := c.running[key]
	c.mu.Unlock()
	switch decide(obj, r, c.owns(key)) {
	case actRelinquish:
		// Another replica's now: stop here, write nothing (it is not
		// deleted, nor suspended).
		if c.stop(key) {
			logr.FromContextOrDiscard(ctx).Info("app stopped: another replica's", "app", key)
		}
		return nil
	case actFinalize:
		c.stop(key)
		return c.underLock(ctx, key, func(ctx context.Context) error { return c.finalize(ctx, obj) })
	case actSuspend:
		var event func()
		if c.stop(key) {
			event = func() {
				c.recorder.Event(obj, corev1.EventTypeNormal, "Suspended", "reconciles stopped: spec.suspend is true")
			}
		}
		return c.writeOwnedStatus(ctx, obj, v1alpha1.Sync{Generation: obj.Generation, Outcome: v1alpha1.Suspended, ReconcileAt: at}, event)
	case actKeep:
		c.pollIfAsked(ctx, key, obj)
		return nil
	}
	if !slices.Contains(obj.Finalizers, pruneFinalizer) {
		// Patched before anything is applied: an App deleted later always
		// gets its prune.
		if err := c.patchFinalizers(ctx, obj, append(slices.Clone(obj.Finalizers), pruneFinalizer)); err != nil {
			return err
		}
	}
	// A new reconcile request polls the repository first: the poller may
	// be shared with Apps that keep it (and its last commit) alive.
	refresh := r != nil && r.at != at
	c.stop(key)
	return c.startApp(ctx, obj, at, refresh, start)
}

// action is what the controller does with an App it is told about.
type action int

const (
	actStart      action = iota // start (or restart) its loop
	actKeep                     // its loop runs with this spec and request
	actSuspend                  // stop its loop, say so
	actFinalize                 // stop its loop, prune, drop the finalizer
	actRelinquish               // another replica's: stop its loop, nothing else
)

// decide what to do with obj, given the loop running for it (nil: none)
// and whether it is this replica's (always, unsharded). A new generation
// or a new reconcile-at value restarts the loop, as do rotated credentials
// (run_apps_rotate.go): its first pass reconciles at once.
func decide(obj *v1alpha1.App, r *runningApp, owned bool) action {
	switch {
	case !owned:
		return actRelinquish
	case obj.DeletionTimestamp != nil:
		return actFinalize
	case obj.Spec.Suspend:
		return actSuspend
	case r != nil && r.gen == obj.Generation && r.at == obj.Annotations[reconcileAtAnnotation] && !r.rotated.Load():
		return actKeep
	default:
		return actStart
	}
}

func (c *appController) startApp(ctx context.Context, obj *v1alpha1.App, at string, refresh bool, start reconcile.StartFunc) error {
	key := obj.Namespace + "/" + obj.Name
	a, err := config.FromObject(obj, config.ObjectOptions{LocalFiles: c.allowLocal})
	if err != nil {
		return c.writeOwnedStatus(ctx, obj, v1alpha1.Sync{Generation: obj.Generation, Outcome: v1alpha1.BadCommit,
			Reason: "InvalidSpec", Message: err.Error(), ReconcileAt: at}, func() { c.recorder.Event(obj, corev1.EventTypeWarning, "InvalidSpec", err.Error()) })
	}
	built, err := c.wiring.build(ctx, []config.App{a})
	if err != nil {
		_ = c.writeOwnedStatus(ctx, obj, v1alpha1.Sync{Generation: obj.Generation, Outcome: v1alpha1.Retrying,
			Message: err.Error(), ReconcileAt: at}, nil)
		return err
	}
	if err := c.setHooks(key, built.hookList); err != nil {
		if sub, ok := built.apps[0].Poller.(*source.Subscription); ok {
			sub.Close()
		}
		return err
	}
	app := built.apps[0]
	appCtx, cancel := context.WithCancel(ctx)
	r := &runningApp{cancel: cancel, done: make(chan struct{}), gen: obj.Generation, at: at, pollAt: obj.Annotations[pollAtAnnotation]}
	creds := &credsRecheck{loopCtx: appCtx, app: key, running: built.creds[a.Name], read: credentialsReader(c.wiring.forApp(a), a),
		restart: func() { c.credentialsRotated(key, r) }, after: time.After}
	app.Observer = &appStatus{c: c, obj: obj.DeepCopy(), at: at, creds: creds}
	app.Lock = c.appLock(key)
	sub, _ := app.Poller.(*source.Subscription)
	if sub != nil {
		r.release, r.wake = sub.Close, sub.Wake()
	}
	c.mu.Lock()
	if c.running == nil {
		c.running = map[string]*runningApp{}
	}
	c.running[key] = r
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(r.done)
		defer creds.stop() // runs before close(r.done): once stop returns, no recheck of this loop runs
		if refresh && sub != nil {
			rctx, cancel := context.WithTimeout(appCtx, refreshTimeout)
			if err := sub.Refresh(rctx); err != nil && appCtx.Err() == nil {
				logr.FromContextOrDiscard(ctx).Info("reconcile request: repository not polled first", "app", key, "err", err.Error())
			}
			cancel()
		}
		start(logr.NewContext(appCtx, logr.FromContextOrDiscard(ctx).WithValues("namespace", obj.Namespace)), app, built.own[a.Name])
	}()
	logr.FromContextOrDiscard(ctx).Info("app started", "app", key, "generation", obj.Generation)
	return nil
}

// credentialsRotated restarts r, the loop of App key, through sync (as a
// spec change would), unless it has been replaced since.
func (c *appController) credentialsRotated(key string, r *runningApp) {
	r.rotated.Store(true)
	if c.requeue != nil {
		c.requeue(key)
	}
}

// stop ends the app's loop and waits for it; it says whether one ran.
func (c *appController) stop(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopLocked(key)
}

func (c *appController) stopLocked(key string) bool {
	r := c.running[key]
	if r == nil {
		return false
	}
	r.cancel()
	<-r.done
	if r.release != nil {
		r.release()
	}
	delete(c.running, key)
	_ = c.setHooks(key, nil) // removing cannot fail
	return true
}

// finalize prunes what a deleted App applied (unless prune is false) and
// then lets it go. A prune that fails is retried with backoff, except when
// the App's namespace is itself being deleted: its ServiceAccount and
// Secrets may be gone already, and holding the App would hold the
// namespace forever; the objects in that namespace go with it, and an
// event says the prune did not finish.
func (c *appController) finalize(ctx context.Context, obj *v1alpha1.App) error {
	if !slices.Contains(obj.Finalizers, pruneFinalizer) {
		return nil
	}
	pruning := obj.Spec.Prune == nil || *obj.Spec.Prune
	// With prune: false the objects stay; refit's state of the App (its
	// inventory and memory) goes either way.
	if err := c.prune(ctx, obj, pruning); err != nil {
		ns, nerr := c.core.GetNamespace(ctx, obj.Namespace)
		going := apierrors.IsNotFound(nerr) || (nerr == nil && ns.DeletionTimestamp != nil)
		if !going {
			c.recorder.Event(obj, corev1.EventTypeWarning, "PruneFailed", err.Error())
			return err
		}
		c.recorder.Event(obj, corev1.EventTypeWarning, "PruneFailed", err.Error()+": finalizer removed, the namespace is being deleted")
	} else if pruning {
		c.recorder.Event(obj, corev1.EventTypeNormal, "Pruned", "the objects the App applied were deleted")
	}
	return c.patchFinalizers(ctx, obj, slices.DeleteFunc(slices.Clone(obj.Finalizers), func(f string) bool { return f == pruneFinalizer }))
}

// prune deletes what obj applied (all) and then refit's state of it, or
// only the state.
func (c *appController) prune(ctx context.Context, obj *v1alpha1.App, all bool) error {
	// The spec need not be valid any more to prune: only its name,
	// namespace and identity matter.
	a, _ := config.FromObject(obj, config.ObjectOptions{LocalFiles: true})
	rec := c.base
	if c.wiring.ids != nil {
		own, err := c.wiring.ids.reconciler(ctx, a)
		if err != nil {
			return err
		}
		if own != nil {
			rec = own
		}
	}
	if !all {
		return rec.Forget(ctx, appOptions(a, c.wiring.grace))
	}
	return rec.PruneAll(ctx, appOptions(a, c.wiring.grace))
}

func (c *appController) patchFinalizers(ctx context.Context, obj *v1alpha1.App, fins []string) error {
	if fins == nil {
		fins = []string{}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"finalizers": fins, "resourceVersion": obj.ResourceVersion}})
	if err != nil {
		return err
	}
	_, err = c.dyn.Resource(appsGVR).Namespace(obj.Namespace).Patch(ctx, obj.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("app %s/%s: finalizers: %w", obj.Namespace, obj.Name, err)
	}
	return nil
}

// writeStatus computes the App's status after s from the status it has
// and writes it when it changed.
func (c *appController) writeStatus(ctx context.Context, namespace, name string, s v1alpha1.Sync) error {
	res := c.dyn.Resource(appsGVR).Namespace(namespace)
	u, err := res.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("app %s/%s: status: %w", namespace, name, err)
	}
	cur, err := appOf(u)
	if err != nil {
		return err
	}
	s.Now = metav1.Now()
	next := v1alpha1.ComputeStatus(&cur.Status, s)
	if equality.Semantic.DeepEqual(cur.Status, next) {
		return nil
	}
	cur.Status = next
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(cur)
	if err != nil {
		return err
	}
	if _, err := res.UpdateStatus(ctx, &unstructured.Unstructured{Object: m}, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("app %s/%s: status: %w", namespace, name, err)
	}
	return nil
}

// byName indexes the informer's Apps by name alone (nameHolder).
const byName = "name"

func nameIndex(obj any) ([]string, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	return []string{m.GetName()}, nil
}

// appsNamed lists the Apps of the informer's cache with that name, in any
// namespace (those it cannot read are left out: sync reports them).
func appsNamed(idx cache.Indexer, name string) []*v1alpha1.App {
	items, err := idx.ByIndex(byName, name)
	if err != nil {
		return nil
	}
	var apps []*v1alpha1.App
	for _, item := range items {
		if a, err := appOf(item); err == nil {
			apps = append(apps, a)
		}
	}
	return apps
}

func appOf(item any) (*v1alpha1.App, error) {
	u, ok := item.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("app: unexpected %T", item)
	}
	var obj v1alpha1.App
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &obj); err != nil {
		return nil, fmt.Errorf("app %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	obj.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("App")) // events name the kind
	return &obj, nil
}

// appStatus writes each pass of an App's loop to its status and events.
type appStatus struct {
	c   *appController
	obj *v1alpha1.App // as started: its generation and reconcile-at
	at  string
	// creds re-reads the App's credentials while Git refuses them (nil:
	// never).
	creds *credsRecheck
}

var _ reconcile.Observer = (*appStatus)(nil)

func (s *appStatus) Observe(ctx context.Context, p reconcile.Pass) {
	if s.creds != nil {
		s.creds.observe(p)
	}
	out, warn := outcomeOf(p.Phase)
	sy := v1alpha1.Sync{Generation: s.obj.Generation, Revision: revisionString(p.Revision), Outcome: out,
		Message: p.Message, ReconcileAt: s.at, Rollouts: rolloutStatuses(p.Rollouts)}
	if err := s.c.writeStatus(ctx, s.obj.Namespace, s.obj.Name, sy); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "app status not written")
	}
	if p.Progress {
		return // the status says it; an event per batch would be noise
	}
	typ := corev1.EventTypeNormal
	if warn {
		typ = corev1.EventTypeWarning
	}
	msg := p.Message
	if sy.Revision != "" {
		msg = sy.Revision + ": " + msg
	}
	s.c.recorder.Event(s.obj, typ, string(out), msg)
}

// outcomeOf maps a pass's phase to the App API's outcome, and says
// whether it is a warning.
func outcomeOf(p reconcile.Phase) (v1alpha1.Outcome, bool) {
	switch p {
	case reconcile.PhaseSuccess:
		return v1alpha1.Succeeded, false
	case reconcile.PhaseUnchanged:
		return v1alpha1.Unchanged, false
	case reconcile.PhaseUnhealthy:
		return v1alpha1.Unhealthy, true
	case reconcile.PhaseRolloutFailed:
		return v1alpha1.RolloutFailed, true
	case reconcile.PhaseBadCommit:
		return v1alpha1.BadCommit, true
	case reconcile.PhaseTransient:
		return v1alpha1.Retrying, true
	case reconcile.PhaseGitFailed:
		return v1alpha1.GitOperationFailed, true
	default:
		return v1alpha1.Progressing, false
	}
}

// revisionString is a revision as the status shows it: main@sha1:<sha>.
func revisionString(rev source.Revision) string {
	if rev.Commit == "" {
		return ""
	}
	ref := strings.TrimPrefix(strings.TrimPrefix(rev.Ref, "refs/heads/"), "refs/tags/")
	if ref == "" {
		return "sha1:" + rev.Commit
	}
	return ref + "@sha1:" + rev.Commit
}

// nsGetter reads Namespaces with a typed client.
type nsGetter struct {
	get func(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Namespace, error)
}

func (g nsGetter) GetNamespace(ctx context.Context, name string) (*corev1.Namespace, error) {
	return g.get(ctx, name, metav1.GetOptions{})
}

func (f *runFlags) appController(ctx context.Context, cfg *rest.Config, client kubernetes.Interface, w *appWiring, r *reconcile.Reconciler, rec record.EventRecorder) (*appController, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	// Without the CRD the informer would retry its list forever, saying
	// nothing useful: fail at start instead.
	_, err = dyn.Resource(appsGVR).Namespace(f.watchNS).List(ctx, metav1.ListOptions{Limit: 1})
	if apierrors.IsNotFound(err) {
		return nil, errors.New("apps.refit.dev: not installed (kubectl apply --server-side -k deploy/crds), or run with --config FILE or --repo URL")
	}
	if err != nil {
		return nil, fmt.Errorf("apps.refit.dev: %w", err)
	}
	return &appController{dyn: dyn, core: nsGetter{get: client.CoreV1().Namespaces().Get}, namespace: f.watchNS,
		allowLocal: f.allowLocal, wiring: w, base: r, recorder: rec}, nil
}
