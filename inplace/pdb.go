package inplace

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// DisruptionBudget is what refit needs of a PodDisruptionBudget. PDBs gate
// only the eviction API, not Pod patches: refit honours them itself, and
// counts the Pods it has just taken down at once instead of waiting for the
// disruption controller to notice.
type DisruptionBudget struct {
	Name     string
	Selector labels.Selector
	// DesiredHealthy is the disruption controller's figure: how many of the
	// Pods it selects must stay healthy.
	DesiredHealthy int
	// Stale: the controller has not observed the PDB's last change, so its
	// figures cannot be trusted; nothing may be disrupted under it.
	Stale bool
}

// budgetsOf converts PDBs. A nil selector selects nothing; an empty one
// selects every Pod of the namespace (policy/v1).
func budgetsOf(pdbs []policyv1.PodDisruptionBudget) []DisruptionBudget {
	var out []DisruptionBudget
	for i := range pdbs {
		pdb := &pdbs[i]
		if pdb.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			continue
		}
		out = append(out, DisruptionBudget{Name: pdb.Name, Selector: sel, DesiredHealthy: int(pdb.Status.DesiredHealthy),
			Stale: pdb.Status.ObservedGeneration < pdb.Generation})
	}
	return out
}

// covering returns the budgets that select any of pods.
func covering(budgets []DisruptionBudget, pods []*corev1.Pod) []DisruptionBudget {
	var out []DisruptionBudget
	for _, b := range budgets {
		for _, pod := range pods {
			if b.Selector.Matches(labels.Set(pod.Labels)) {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// healthy is the disruption controller's count (ready, not being deleted),
// less the Pods refit has taken down that may still look ready.
func healthy(pod *corev1.Pod, disrupted func(*corev1.Pod) bool) bool {
	if pod.DeletionTimestamp != nil || disrupted(pod) {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// TrimToBudgets keeps the Pods of batch (in order) that can be taken down
// without any PDB that selects them going below its desired healthy count.
// nsPods are the namespace's Pods, freshly read; disrupted reports Pods refit
// has taken down that may still look healthy. A Pod that is not healthy now
// costs no allowance. It is a pure function.
func TrimToBudgets(batch []*corev1.Pod, budgets []DisruptionBudget, nsPods []*corev1.Pod, disrupted func(*corev1.Pod) bool) []*corev1.Pod {
	if len(budgets) == 0 {
		return batch
	}
	current := map[string]*corev1.Pod{}
	allowed := make([]int, len(budgets))
	for i, b := range budgets {
		n := 0
		for _, pod := range nsPods {
			current[pod.Name] = pod
			if b.Selector.Matches(labels.Set(pod.Labels)) && healthy(pod, disrupted) {
				n++
			}
		}
		allowed[i] = n - b.DesiredHealthy
		if b.Stale {
			allowed[i] = 0
		}
	}
	var out []*corev1.Pod
	for _, pod := range batch {
		if cur, ok := current[pod.Name]; ok && cur.UID == pod.UID {
			pod = cur
		}
		if !healthy(pod, disrupted) {
			out = append(out, pod)
			continue
		}
		ok := true
		for i, b := range budgets {
			if b.Selector.Matches(labels.Set(pod.Labels)) && allowed[i] <= 0 {
				ok = false
			}
		}
		if !ok {
			continue
		}
		for i, b := range budgets {
			if b.Selector.Matches(labels.Set(pod.Labels)) {
				allowed[i]--
			}
		}
		out = append(out, pod)
	}
	return out
}

// namespaceLocks serialises the PDB decisions of an Engine's rollouts per
// namespace, so two workloads under one PDB (also of two apps) cannot both
// spend its last allowance.
type namespaceLocks struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func (n *namespaceLocks) get(ns string) *sync.Mutex {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.locks == nil {
		n.locks = map[string]*sync.Mutex{}
	}
	if n.locks[ns] == nil {
		n.locks[ns] = &sync.Mutex{}
	}
	return n.locks[ns]
}

// disruptionBudgets lists the namespace's PDBs.
func (e *Engine) disruptionBudgets(ctx context.Context, namespace string) ([]DisruptionBudget, error) {
	pdbs, err := e.client.PolicyV1().PodDisruptionBudgets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list PodDisruptionBudgets in %s: %w", namespace, err)
	}
	return budgetsOf(pdbs.Items), nil
}

// withinBudgets trims batch to what the PDBs covering it allow now, from a
// fresh read of the namespace's Pods, and marks the Pods it keeps as taken
// down by this Engine before it lets another rollout decide. The caller
// must unmark Pods it does not go on to update.
func (e *Engine) withinBudgets(ctx context.Context, namespace string, batch []*corev1.Pod, budgets []DisruptionBudget) ([]*corev1.Pod, error) {
	budgets = covering(budgets, batch)
	if len(budgets) == 0 {
		for _, pod := range batch {
			e.busy.add(pod.UID)
		}
		return batch, nil
	}
	lock := e.pdbLocks.get(namespace)
	lock.Lock()
	defer lock.Unlock()
	list, err := e.client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list Pods in %s: %w", namespace, err)
	}
	pods := make([]*corev1.Pod, len(list.Items))
	for i := range list.Items {
		pods[i] = &list.Items[i]
	}
	kept := TrimToBudgets(batch, budgets, pods, func(p *corev1.Pod) bool { return e.busy.has(p.UID) || RestartPending(p) })
	for _, pod := range kept {
		e.busy.add(pod.UID)
	}
	return kept, nil
}
