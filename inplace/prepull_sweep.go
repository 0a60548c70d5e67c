package inplace

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// pullSweep removes the pre-pull Pods that a killed refit left behind and
// that no rollout will come back for: the gate keeper of refit run calls it
// in the namespaces of the workloads it knows.
type pullSweep struct {
	mu         sync.Mutex
	namespaces map[string][]string // app → its workloads' namespaces
	last       time.Time
}

// pullSweepEvery is how often the sweep lists pre-pull Pods.
const pullSweepEvery = 10 * time.Second

// set records the namespaces of an app's workloads.
func (s *pullSweep) set(app string, workloads []*unstructured.Unstructured) {
	seen := map[string]bool{}
	var nss []string
	for _, w := range workloads {
		if ns := w.GetNamespace(); ns != "" && !seen[ns] {
			seen[ns] = true
			nss = append(nss, ns)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.namespaces == nil {
		s.namespaces = map[string][]string{}
	}
	if len(nss) == 0 {
		delete(s.namespaces, app)
		return
	}
	s.namespaces[app] = nss
}

// leftoverPuller decides whether a pre-pull Pod is a leftover: no rollout
// of this process pulls with it (active), and it has ended (its deadline),
// or its workload is gone, or the workload's rollout record is not the
// one it pulled for (that rollout ended). A record that still names its
// rollout means a refit stopped mid-rollout: the rollout, resumed, deals
// with it. A bare Pod keeps no record: not active is enough. It is a pure
// function.
func leftoverPuller(pod *corev1.Pod, active bool, workloadFound bool, recordID string) bool {
	switch {
	case active || pod.DeletionTimestamp != nil:
		return false
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		return true
	case !workloadFound:
		return true
	default:
		return recordID != pod.Labels[PullRolloutLabel]
	}
}

// run sweeps, at most every pullSweepEvery.
func (s *pullSweep) run(ctx context.Context, e *Engine, now time.Time) {
	s.mu.Lock()
	if now.Sub(s.last) < pullSweepEvery {
		s.mu.Unlock()
		return
	}
	s.last = now
	seen := map[string]bool{}
	var nss []string
	for _, list := range s.namespaces {
		for _, ns := range list {
			if !seen[ns] {
				seen[ns] = true
				nss = append(nss, ns)
			}
		}
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	log := logr.FromContextOrDiscard(ctx)
	for _, ns := range nss {
		pods, err := e.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: PullRolloutLabel})
		if err != nil {
			log.V(1).Info("pre-pull pods not listed", "namespace", ns, "error", err.Error())
			continue
		}
		for i := range pods.Items {
			pod := &pods.Items[i]
			found, id := e.rolloutOf(ctx, pod)
			if !leftoverPuller(pod, e.pulling.has(pod.Labels[PullRolloutLabel]), found, id) {
				continue
			}
			err := e.client.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64),
				Preconditions: &metav1.Preconditions{UID: &pod.UID}})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
				log.V(1).Info("pre-pull pod not deleted", "pod", ns+"/"+pod.Name, "error", err.Error())
				continue
			}
			log.Info("left-over pre-pull pod deleted", "pod", ns+"/"+pod.Name)
		}
	}
}

// rolloutOf reads the workload a pre-pull Pod pulls for: whether it
// exists, and the ID of its rollout record. A lookup that fails says the
// workload exists with the Pod's own rollout: nothing is deleted on a doubt.
func (e *Engine) rolloutOf(ctx context.Context, pod *corev1.Pod) (bool, string) {
	own := pod.Labels[PullRolloutLabel]
	kind, name, ok := strings.Cut(pod.Annotations[PullWorkloadAnnotation], "/")
	if !ok {
		return true, own
	}
	if kind == "Pod" {
		return true, "" // a bare Pod keeps no record
	}
	gvr, known := resources[schema.GroupKind{Group: "apps", Kind: kind}]
	if !known {
		return true, own
	}
	obj, err := e.dyn.Resource(gvr).Namespace(pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, ""
	case err != nil:
		return true, own
	}
	rec, _ := readRecord(obj.GetAnnotations())
	return true, rec.ID
}
