package inplace

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/refit-gitops/refit/diff"
)

// PullPhase says what a pre-pull report is about.
type PullPhase string

const (
	// PullStarted: pre-pull Pods started pulling on the nodes that need
	// the images.
	PullStarted PullPhase = "pulling"
	// PullEnded: every node that needed the images has them (or pulls at
	// the restart, GivenUp).
	PullEnded PullPhase = "pulled"
	// PullOff: pre-pull is not possible for this rollout (Reason); the
	// kubelet pulls at each restart.
	PullOff PullPhase = "off"
)

// PullProgress is a report of a rollout's pre-pull phase.
type PullProgress struct {
	Phase  PullPhase
	Images []string
	// Nodes need the images; Pulled have them now; GivenUp pull at the
	// restart instead (no room for a pre-pull Pod, its node rejected it).
	Nodes, Pulled, GivenUp int
	Duration               time.Duration
	Reason                 string
}

// activeRollouts are the IDs of rollouts that pre-pull in this process: the
// gate keeper leaves their pre-pull Pods alone.
type activeRollouts struct {
	mu  sync.Mutex
	ids map[string]int
}

func newActiveRollouts() *activeRollouts { return &activeRollouts{ids: map[string]int{}} }

func (a *activeRollouts) add(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ids[id]++
}

func (a *activeRollouts) remove(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids[id] <= 1 {
		delete(a.ids, id)
		return
	}
	a.ids[id]--
}

func (a *activeRollouts) has(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ids[id] > 0
}

// pulls is one run's pre-pull step: the writer around PlanPulls. It keeps
// what the run learnt (nodes pulled, given up, pre-pull Pods created); all
// else it reads from a cache of the workload's pre-pull Pods and from the
// nodes.
type pulls struct {
	e        *Engine
	ref      diff.Ref
	owner    *metav1.OwnerReference
	rollout  string
	target   Target
	opts     PrePullOptions
	deadline time.Duration
	store    cache.Store

	nodes     map[string][]string
	nodesRead time.Time
	nodesOff  bool

	pulled  map[string]bool
	givenUp map[string]string
	created map[string]time.Time
	names   map[string]bool // pre-pull Pods created and not deleted
	// off says why pre-pull stopped for this run ("": it did not).
	off     string
	start   time.Time
	told    bool
	ended   bool
	pending []PullProgress
}

// startPulls starts a run's pre-pull step, or returns nil where the
// workload turns it off. Its cache wakes the run's loop (notify).
func (r *run) startPulls(ctx context.Context, notify func(any)) (*pulls, error) {
	if r.opts.PrePull.Disabled || PrePullDisabled(r.change.Desired.GetAnnotations()) {
		return nil, nil
	}
	p := &pulls{e: r.e, ref: r.change.Ref, rollout: r.w.record().ID, target: r.target, opts: r.opts.PrePull,
		deadline: r.deadline(), pulled: map[string]bool{}, givenUp: map[string]string{},
		created: map[string]time.Time{}, names: map[string]bool{}}
	if live := r.change.Live; live != nil && live.GetUID() != "" {
		// Not a controller reference: nothing adopts or counts a pre-pull
		// Pod, and the garbage collector removes it with the workload.
		p.owner = &metav1.OwnerReference{APIVersion: live.GetAPIVersion(), Kind: live.GetKind(), Name: live.GetName(), UID: live.GetUID()}
	}
	sel := labels.SelectorFromSet(labels.Set{PullWorkloadLabel: pullWorkloadValue(r.change.Ref)}).String()
	factory := informers.NewSharedInformerFactoryWithOptions(r.e.client, 0, informers.WithNamespace(r.change.Ref.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel }))
	informer := factory.Core().V1().Pods().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, n any) { notify(n) },
		DeleteFunc: notify,
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), informer.HasSynced) {
		return nil, fmt.Errorf("%s: pre-pull pod cache did not sync: %w", r.change.Ref, ctx.Err())
	}
	p.store = informer.GetStore()
	r.e.pulling.add(p.rollout)
	return p, nil
}

// step runs the pass's pre-pull step: it reads the nodes, decides, deletes
// and creates pre-pull Pods, and returns the nodes whose Pods must wait,
// or a failure that stops the rollout.
func (p *pulls) step(ctx context.Context, pods []*corev1.Pod, in PassInput) (map[string]bool, *PullFailure, error) {
	if p == nil || p.off != "" {
		return nil, nil, nil
	}
	p.readNodes(ctx, pods, in.Now)
	var pullers []*corev1.Pod
	for _, obj := range p.store.List() {
		if pod, ok := obj.(*corev1.Pod); ok {
			pullers = append(pullers, pod)
		}
	}
	maxUnavailable := in.MaxUnavailable
	d := PlanPulls(PullInput{Pods: pods, Eligible: in.Eligible, Ordinal: in.Ordinal, Target: p.target,
		Rollout: p.rollout, Revision: p.target.Revision, Nodes: p.nodes, Pullers: pullers, Pulled: p.pulled,
		GivenUp: p.givenUp, Created: p.created, Limit: p.opts.pullLimit(maxUnavailable), Now: in.Now,
		Timeout: p.opts.pullTimeout(p.deadline)})
	log := logr.FromContextOrDiscard(ctx)
	for _, node := range d.Pulled {
		p.pulled[node] = true
	}
	for node, why := range d.GiveUp {
		p.givenUp[node] = why
		log.Info("pre-pull given up on a node: the kubelet pulls at the restart", "object", p.ref.String(), "node", node, "reason", why)
	}
	for _, pod := range d.Delete {
		if err := p.delete(ctx, pod.Name); err != nil {
			return nil, nil, err
		}
	}
	if d.Failed != nil {
		return nil, d.Failed, nil
	}
	for _, c := range d.Create {
		if err := p.create(ctx, c, in.Now); err != nil {
			return nil, nil, err
		}
		if p.off != "" {
			p.report(PullProgress{Phase: PullOff, Images: d.Images, Nodes: d.Nodes, Reason: p.off})
			log.Info("pre-pull not possible: the kubelet pulls at each restart", "object", p.ref.String(), "reason", p.off)
			return nil, nil, nil
		}
	}
	if !p.told && d.Pulling > 0 {
		p.told, p.start = true, in.Now
		p.report(PullProgress{Phase: PullStarted, Images: d.Images, Nodes: d.Nodes, Pulled: len(p.pulled)})
	}
	if p.told && !p.ended && len(d.Hold) == 0 {
		p.ended = true
		p.report(PullProgress{Phase: PullEnded, Images: d.Images, Nodes: len(p.pulled) + len(p.givenUp),
			Pulled: len(p.pulled), GivenUp: len(p.givenUp), Duration: in.Now.Sub(p.start)})
	}
	return d.Hold, nil, nil
}

func (p *pulls) report(pp PullProgress) { p.pending = append(p.pending, pp) }

// readNodes lists the nodes once, and again (at most every 10 s) when a
// Pod runs on a node not seen yet. Refit may not be allowed to read nodes
// (an app's own identity): then nothing is skipped.
func (p *pulls) readNodes(ctx context.Context, pods []*corev1.Pod, now time.Time) {
	if p.nodesOff {
		return
	}
	stale := p.nodes == nil
	for _, pod := range pods {
		if _, ok := p.nodes[pod.Spec.NodeName]; pod.Spec.NodeName != "" && !ok {
			stale = true
		}
	}
	if !stale || now.Sub(p.nodesRead) < 10*time.Second {
		return
	}
	p.nodesRead = now
	// ResourceVersion "0": from the API server's cache, not etcd.
	list, err := p.e.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		logr.FromContextOrDiscard(ctx).V(1).Info("nodes not read: pre-pull skips no node", "object", p.ref.String(), "error", err.Error())
		p.nodesOff = apierrors.IsForbidden(err)
		return
	}
	p.nodes = map[string][]string{}
	for _, n := range list.Items {
		var names []string
		for _, img := range n.Status.Images {
			names = append(names, img.Names...)
		}
		p.nodes[n.Name] = names
	}
}

// create starts one pre-pull Pod. A refusal (quota, policy, RBAC, image
// volumes dropped by an API server without the feature) turns pre-pull
// off for the run: the rollout goes on as without it.
func (p *pulls) create(ctx context.Context, c NodePull, now time.Time) error {
	pod := PullerPod(PullerSpec{Namespace: p.ref.Namespace, Workload: p.ref, Owner: p.owner, Rollout: p.rollout,
		Revision: p.target.Revision, Pull: c, Image: pullerImageFor(p.opts.Image, p.nodes[c.Node]), Deadline: p.deadline})
	out, err := p.e.client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{FieldManager: diff.FieldManager})
	switch {
	case err == nil:
	case apierrors.IsAlreadyExists(err):
		// A pre-pull Pod of this rollout from before a restart, or one
		// being deleted: the cache shows which.
	case refusal(err):
		p.off = "the pre-pull Pod was refused: " + apiMessage(err)
		return nil
	default:
		return fmt.Errorf("%s: create pre-pull pod on node %s: %w", p.ref, c.Node, err)
	}
	p.created[c.Node], p.names[pod.Name] = now, true
	if out != nil && len(volumeImages(out)) != len(c.Images) {
		p.off = "the API server dropped the pre-pull Pod's image volumes (is the ImageVolume feature off?)"
		return p.delete(ctx, pod.Name)
	}
	return nil
}

func (p *pulls) delete(ctx context.Context, name string) error {
	err := p.e.client.CoreV1().Pods(p.ref.Namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: delete pre-pull pod %s: %w", p.ref, name, err)
	}
	delete(p.names, name)
	return nil
}

// cleanup deletes every pre-pull Pod of the workload at the run's end,
// also when refit is being stopped (on a context of its own, briefly).
func (p *pulls) cleanup(ctx context.Context) {
	if p == nil {
		return
	}
	defer p.e.pulling.remove(p.rollout)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	gone := map[string]bool{}
	for _, obj := range p.store.List() {
		if pod, ok := obj.(*corev1.Pod); ok && pod.DeletionTimestamp == nil {
			gone[pod.Name] = true
			if err := p.delete(ctx, pod.Name); err != nil {
				logr.FromContextOrDiscard(ctx).Error(err, "pre-pull pod left behind", "object", p.ref.String(), "pod", pod.Name)
			}
		}
	}
	for name := range p.names {
		if !gone[name] {
			// Created, perhaps not in the cache yet.
			_ = p.delete(ctx, name)
		}
	}
}

// reportPulls hands the pending pre-pull reports to the run's progress.
func (r *run) reportPulls() {
	if r.pull == nil || len(r.pull.pending) == 0 {
		return
	}
	pending := r.pull.pending
	r.pull.pending = nil
	if r.opts.Progress == nil {
		return
	}
	for i := range pending {
		r.opts.Progress(Progress{Ref: r.change.Ref, Batch: r.batch, Updated: r.res.Updated, Total: r.res.Total, Pull: &pending[i]})
	}
}

// unheld leaves out the candidates whose Pods must wait (hold).
func unheld(candidates []Candidate, byName map[string]*corev1.Pod, hold func(*corev1.Pod) bool) []Candidate {
	if hold == nil {
		return candidates
	}
	out := make([]Candidate, 0, len(candidates))
	for _, c := range candidates {
		if !hold(byName[c.Name]) {
			out = append(out, c)
		}
	}
	return out
}

// holdOn holds the Pods on the nodes given.
func holdOn(nodes map[string]bool) func(*corev1.Pod) bool {
	if len(nodes) == 0 {
		return nil
	}
	return func(pod *corev1.Pod) bool { return nodes[pod.Spec.NodeName] }
}
