package inplace

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	listerscorev1 "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// GateKeeper keeps refit's readiness gate (InPlaceUpdateReady) open on the
// Pods of gated workloads at any time, not only while a rollout runs: Pods
// the controllers create (a scale-up, an eviction, a lost node) get the
// condition True, and so do Pods whose gate was left False (a killed refit,
// a refused patch, a rollback) once they run and are ready and no rollout of
// this process is updating them. It watches the Pods of every namespace
// that has gated workloads, so it acts within moments of a Pod event.
//
// Only one process may write gates: run it where the rollouts run (under
// leader election in the service).
type GateKeeper struct {
	e *Engine
	// sweep is how often the Pods whose gate is not True are looked at
	// again without an event: a rollout that lets go of a Pod (Busy turns
	// false) makes no Pod event.
	sweep time.Duration

	mu      sync.Mutex
	apps    map[string][]gatedWorkload // app → its gated workloads
	changed chan struct{}
	watches map[string]*podWatch // namespace → its Pod informer, while Run runs
	// pulls removes pre-pull Pods left behind by a killed refit.
	pulls pullSweep
}

// gatedWorkload is a workload whose template lists refit's readiness gate.
type gatedWorkload struct {
	namespace string
	// pod names a bare Pod: only that Pod is the workload's.
	pod string
	sel labels.Selector
}

// podWatch is the Pod informer of one namespace.
type podWatch struct {
	stop   context.CancelFunc
	done   chan struct{}
	lister listerscorev1.PodNamespaceLister
	synced cache.InformerSynced
}

// NewGateKeeper returns a GateKeeper that writes gates with e and leaves
// alone the Pods e's rollouts are updating.
func NewGateKeeper(e *Engine) *GateKeeper {
	return &GateKeeper{e: e, sweep: time.Second, apps: map[string][]gatedWorkload{}, changed: make(chan struct{}, 1), watches: map[string]*podWatch{}}
}

// Set makes workloads (each with its namespace set) the gated workloads of
// app, replacing the app's previous ones. Workloads whose template does not
// list the gate are left out; an app with none is forgotten.
func (k *GateKeeper) Set(app string, workloads []*unstructured.Unstructured) {
	k.pulls.set(app, workloads)
	var gated []gatedWorkload
	for _, w := range workloads {
		if g, ok := gatedOf(w); ok {
			gated = append(gated, g)
		}
	}
	k.mu.Lock()
	if len(gated) == 0 {
		delete(k.apps, app)
	} else {
		k.apps[app] = gated
	}
	k.mu.Unlock()
	select {
	case k.changed <- struct{}{}:
	default:
	}
}

// gatedOf reads a workload's selector, if its template lists the gate.
func gatedOf(w *unstructured.Unstructured) (gatedWorkload, bool) {
	if !hasGate(w) {
		return gatedWorkload{}, false
	}
	g := gatedWorkload{namespace: w.GetNamespace(), sel: labels.Everything()}
	if w.GetKind() == "Pod" {
		g.pod = w.GetName()
		return g, true
	}
	raw, ok, _ := unstructured.NestedMap(w.Object, "spec", "selector")
	if !ok {
		return gatedWorkload{}, false // not a valid workload: the API server refuses it
	}
	var ls metav1.LabelSelector
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, &ls); err != nil {
		return gatedWorkload{}, false
	}
	sel, err := metav1.LabelSelectorAsSelector(&ls)
	if err != nil || sel.Empty() {
		return gatedWorkload{}, false
	}
	g.sel = sel
	return g, true
}

func (g gatedWorkload) has(pod *corev1.Pod) bool {
	if pod.Namespace != g.namespace {
		return false
	}
	if g.pod != "" {
		return pod.Name == g.pod
	}
	return g.sel.Matches(labels.Set(pod.Labels))
}

// gateToOpen is the keeper's decision for one Pod: whether to set its
// InPlaceUpdateReady condition True now. Only Pods of gated workloads are
// considered, never one being deleted or one a rollout of this process is
// updating (busy: its gate is False on purpose). A Pod without the
// condition gets it at once (it cannot become Ready without it); a Pod
// whose gate is False gets it once its containers are ready and no restart
// refit patched is pending.
func gateToOpen(pod *corev1.Pod, workloads []gatedWorkload, busy bool) bool {
	if pod.DeletionTimestamp != nil || busy || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return false
	}
	ours := false
	for _, w := range workloads {
		ours = ours || w.has(pod)
	}
	if !ours {
		return false
	}
	status, set := gateStatus(pod)
	switch {
	case !set:
		return true
	case status == corev1.ConditionTrue:
		return false
	default:
		return podContainersReady(pod) && !RestartPending(pod)
	}
}

// Run keeps the gates until ctx ends.
func (k *GateKeeper) Run(ctx context.Context) {
	queue := workqueue.NewTypedRateLimitingQueue(workqueue.NewTypedItemExponentialFailureRateLimiter[types.NamespacedName](100*time.Millisecond, 10*time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k.next(ctx, queue) {
		}
	}()
	defer func() {
		queue.ShutDown()
		wg.Wait()
		k.mu.Lock()
		watches := k.watches
		k.watches = map[string]*podWatch{}
		k.mu.Unlock()
		for _, w := range watches {
			w.stop()
			<-w.done
		}
	}()
	ticker := time.NewTicker(k.sweep)
	defer ticker.Stop()
	for {
		k.syncWatches(ctx, queue)
		k.pulls.run(ctx, k.e, k.e.now())
		select {
		case <-ctx.Done():
			return
		case <-k.changed:
		case <-ticker.C:
		}
	}
}

// syncWatches starts a Pod informer for every namespace with gated
// workloads and stops the others, then queues every Pod whose gate is not
// True (new workloads in a namespace already watched, and the sweep).
func (k *GateKeeper) syncWatches(ctx context.Context, queue workqueue.TypedRateLimitingInterface[types.NamespacedName]) {
	k.mu.Lock()
	want := map[string]bool{}
	for _, ws := range k.apps {
		for _, w := range ws {
			want[w.namespace] = true
		}
	}
	var stopped []*podWatch
	for ns, w := range k.watches {
		if !want[ns] {
			stopped = append(stopped, w)
			delete(k.watches, ns)
		}
	}
	for ns := range want {
		if k.watches[ns] == nil {
			k.watches[ns] = k.watch(ctx, ns, queue)
		}
	}
	watches := make([]*podWatch, 0, len(k.watches))
	for _, w := range k.watches {
		watches = append(watches, w)
	}
	k.mu.Unlock()
	for _, w := range stopped {
		w.stop()
		<-w.done
	}
	for _, w := range watches {
		if !w.synced() {
			continue // its initial list queues every Pod
		}
		pods, err := w.lister.List(labels.Everything())
		if err != nil {
			continue
		}
		for _, pod := range pods {
			if !gateTrue(pod) {
				queue.Add(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
			}
		}
	}
}

// watch starts the Pod informer of one namespace; its events queue the Pod.
func (k *GateKeeper) watch(ctx context.Context, namespace string, queue workqueue.TypedRateLimitingInterface[types.NamespacedName]) *podWatch {
	ctx, cancel := context.WithCancel(ctx)
	factory := informers.NewSharedInformerFactoryWithOptions(k.e.client, 0, informers.WithNamespace(namespace))
	pods := factory.Core().V1().Pods()
	enqueue := func(obj any) {
		if pod, ok := obj.(*corev1.Pod); ok && !gateTrue(pod) {
			queue.Add(types.NamespacedName{Namespace: pod.Namespace, Name: pod.Name})
		}
	}
	_, _ = pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	w := &podWatch{stop: cancel, done: make(chan struct{}), lister: pods.Lister().Pods(namespace), synced: pods.Informer().HasSynced}
	factory.Start(ctx.Done())
	go func() {
		defer close(w.done)
		<-ctx.Done()
		factory.Shutdown()
	}()
	return w
}

// next handles one queued Pod; it returns false once the queue is shut
// down.
func (k *GateKeeper) next(ctx context.Context, queue workqueue.TypedRateLimitingInterface[types.NamespacedName]) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	err := k.keep(ctx, key)
	switch {
	case err == nil || apierrors.IsNotFound(err) || ctx.Err() != nil:
		queue.Forget(key)
	case queue.NumRequeues(key) < 5:
		queue.AddRateLimited(key)
	default:
		logr.FromContextOrDiscard(ctx).Error(err, "readiness gate not set", "pod", key.String())
		queue.Forget(key)
	}
	return true
}

// keep opens the gate of one Pod if the decision says so.
func (k *GateKeeper) keep(ctx context.Context, key types.NamespacedName) error {
	k.mu.Lock()
	w := k.watches[key.Namespace]
	workloads := make([]gatedWorkload, 0, 8)
	for _, ws := range k.apps {
		workloads = append(workloads, ws...)
	}
	k.mu.Unlock()
	if w == nil {
		return nil // no gated workload there any more
	}
	pod, err := w.lister.Get(key.Name)
	if err != nil {
		return err
	}
	if !gateToOpen(pod, workloads, k.e.Busy(pod.UID)) {
		return nil
	}
	return k.e.setGate(ctx, pod, corev1.ConditionTrue)
}
