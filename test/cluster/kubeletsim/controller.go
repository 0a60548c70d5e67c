package kubeletsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Options configure the simulator.
type Options struct {
	// PullDelay is a node's pull time for an image it does not have,
	// unless the node's PullDelayAnnotation says otherwise.
	PullDelay time.Duration
	// BadImage matches images that cannot be pulled (the Stages fail them).
	BadImage *regexp.Regexp
	// ResizeActuation is how long PodResizeInProgress stays on a resize
	// that restarts nothing.
	ResizeActuation time.Duration
	// Workers is the number of nodes handled at once.
	Workers int
	// Log receives one line per write that failed.
	Log io.Writer
}

// kwokNodeAnnotation marks the nodes kwok drives (see test/cluster); hollow
// kubelets have their own kubelet and are left alone.
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

const nodeIndex = "node"

// Controller acts for the kubelet of every kwok node, one node at a time.
type Controller struct {
	client kubernetes.Interface
	opts   Options
	pods   cache.Indexer
	nodes  cache.Indexer
	queue  workqueue.TypedRateLimitingInterface[string]

	mu    sync.Mutex
	pulls map[string]map[string]time.Time // node -> image -> pull done
}

// Run watches Nodes and Pods and acts until ctx ends.
func Run(ctx context.Context, client kubernetes.Interface, opts Options) error {
	factory := informers.NewSharedInformerFactory(client, 0)
	podInf := factory.Core().V1().Pods().Informer()
	nodeInf := factory.Core().V1().Nodes().Informer()
	if err := podInf.AddIndexers(cache.Indexers{nodeIndex: func(obj any) ([]string, error) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || pod.Spec.NodeName == "" {
			return nil, nil
		}
		return []string{pod.Spec.NodeName}, nil
	}}); err != nil {
		return err
	}
	c := &Controller{
		client: client,
		opts:   opts,
		pods:   podInf.GetIndexer(),
		nodes:  nodeInf.GetIndexer(),
		queue:  workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		pulls:  map[string]map[string]time.Time{},
	}
	defer c.queue.ShutDown()
	enqueuePod := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" {
			c.queue.Add(pod.Spec.NodeName)
		}
	}
	if _, err := podInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueuePod,
		UpdateFunc: func(_, obj any) { enqueuePod(obj) },
		DeleteFunc: enqueuePod,
	}); err != nil {
		return err
	}
	if _, err := nodeInf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.queue.Add(obj.(*corev1.Node).Name) },
		UpdateFunc: func(_, obj any) { c.queue.Add(obj.(*corev1.Node).Name) },
	}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("kubeletsim: %v informer did not sync", typ)
		}
	}
	var wg sync.WaitGroup
	for range max(opts.Workers, 1) {
		wg.Go(func() {
			for c.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	factory.Shutdown()
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	name, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(name)
	after, err := c.syncNode(ctx, name)
	switch {
	case err != nil:
		fmt.Fprintf(c.opts.Log, "node %s: %v\n", name, err)
		c.queue.AddRateLimited(name)
	default:
		c.queue.Forget(name)
		if after > 0 {
			c.queue.AddAfter(name, after)
		}
	}
	return true
}

// syncNode does one pass over a kwok node: image pulls, then resizes. It
// returns when to look again.
func (c *Controller) syncNode(ctx context.Context, name string) (time.Duration, error) {
	obj, ok, err := c.nodes.GetByKey(name)
	if err != nil || !ok {
		c.mu.Lock()
		delete(c.pulls, name)
		c.mu.Unlock()
		return 0, err
	}
	node := obj.(*corev1.Node)
	if _, kwok := node.Annotations[kwokNodeAnnotation]; !kwok {
		return 0, nil
	}
	objs, err := c.pods.ByIndex(nodeIndex, name)
	if err != nil {
		return 0, err
	}
	var pods []*corev1.Pod
	for _, o := range objs {
		if pod := o.(*corev1.Pod); pod.DeletionTimestamp == nil {
			pods = append(pods, pod)
		}
	}
	now := time.Now()
	delay, err := PullDelay(node, c.opts.PullDelay)
	if err != nil {
		fmt.Fprintln(c.opts.Log, err)
	}
	c.mu.Lock()
	plan := PlanImages(node, pods, c.pulls[name], now, delay, c.opts.BadImage)
	c.pulls[name] = plan.Pulls
	c.mu.Unlock()

	var after time.Duration
	if !plan.Next.IsZero() {
		after = plan.Next.Sub(now)
	}
	if len(plan.Pulled) > 0 {
		updated := node.DeepCopy()
		updated.Status.Images = WithImages(node, plan.Pulled)
		if _, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
			// The pulls are done: the next pass writes them (and only then
			// lets the Pods waiting for them start).
			c.mu.Lock()
			for _, image := range plan.Pulled {
				c.pulls[name][image] = now
			}
			c.mu.Unlock()
			return 0, fmt.Errorf("write status.images: %w", err)
		}
	}
	for _, pod := range plan.Mark {
		if err := c.markPulling(ctx, pod, true, now); err != nil {
			return 0, err
		}
	}
	for _, pod := range plan.Unmark {
		if err := c.markPulling(ctx, pod, false, now); err != nil {
			return 0, err
		}
	}
	for _, pod := range pods {
		wait, err := c.resize(ctx, pod, node, pods, now)
		if err != nil {
			return 0, err
		}
		if wait > 0 && (after == 0 || wait < after) {
			after = wait
		}
	}
	return after, nil
}

// markPulling adds or removes the PullingCondition with a strategic merge
// patch of the status, which merges conditions by type: nothing the Stages
// write is overwritten.
func (c *Controller) markPulling(ctx context.Context, pod *corev1.Pod, on bool, now time.Time) error {
	cond := map[string]any{"type": PullingCondition, "$patch": "delete"}
	if on {
		cond = map[string]any{
			"type": PullingCondition, "status": corev1.ConditionTrue, "reason": "Pulling",
			"message": pullingMessage(pod, c.opts.BadImage), "lastTransitionTime": metav1.NewTime(now),
		}
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []any{cond}}})
	if err != nil {
		return err
	}
	_, err = c.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pod %s/%s: mark pulling %t: %w", pod.Namespace, pod.Name, on, err)
	}
	return nil
}

// resize takes the kubelet's next resize step for pod. The status is
// written with its resourceVersion: the Stages write containerStatuses as a
// whole too, and after a conflict the next pass decides again.
func (c *Controller) resize(ctx context.Context, pod *corev1.Pod, node *corev1.Node, pods []*corev1.Pod, now time.Time) (time.Duration, error) {
	d := PlanResize(pod, node, pods, now, c.opts.ResizeActuation)
	switch d.Step {
	case ResizeNone:
		return d.After, nil
	case ResizePending:
		// As the kubelet, which writes the generation it looked at on the
		// condition: a spec changed since (another resize, an image) gets
		// the condition again with its generation.
		if old := podCondition(pod, corev1.PodResizePending); old != nil && old.Reason == d.Reason && old.Message == d.Message && old.ObservedGeneration == pod.Generation {
			return 0, nil
		}
	}
	updated := pod.DeepCopy()
	updated.Status = *Resized(pod, d, now)
	_, err := c.client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return 0, nil
	case apierrors.IsConflict(err):
		return 50 * time.Millisecond, nil
	case err != nil:
		return 0, fmt.Errorf("pod %s/%s: resize %s: %w", pod.Namespace, pod.Name, d.Step, err)
	}
	return 0, nil
}
