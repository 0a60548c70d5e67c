package inplace

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/diff"
)

// resizeSubresource is how a running Pod's resources change: the Pod
// itself refuses a resources update (GA since 1.35).
const resizeSubresource = "resize"

// resize sends the Pod's resize, if its resources differ from the target,
// before its patch: the patch's state then records what was resized. It
// returns the Pod as the server left it (the patch's tests and generation
// follow it), or nil when the Pod changed under refit (the next pass sees
// it as it is).
func (r *run) resize(ctx context.Context, pod *corev1.Pod) (*corev1.Pod, map[string]ResizeBefore, error) {
	patch, resized, err := ResizePatch(pod, r.target)
	if err != nil || patch == nil {
		return pod, nil, err
	}
	pods := r.e.client.CoreV1().Pods(pod.Namespace)
	out, err := pods.Patch(ctx, pod.Name, types.JSONPatchType, patch, metav1.PatchOptions{FieldManager: diff.FieldManager}, resizeSubresource)
	switch {
	case err == nil:
		return out, resized, nil
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
		r.unmark(pod.UID)
		return nil, nil, nil
	case refusal(err):
		if podChanged(ctx, pods, pod) {
			r.unmark(pod.UID)
			return nil, nil, nil
		}
		return nil, nil, &refusedError{msg: fmt.Sprintf("the API server refused the resize of Pod %s: %s", pod.Name, apiMessage(err))}
	default:
		return nil, nil, fmt.Errorf("pod %s/%s: resize: %w", pod.Namespace, pod.Name, err)
	}
}

// patchQuiet updates Pods whose update takes no container down (Assess's
// Quiet): no drain, no share of the bound or of the PDBs. It reports
// whether the rollout stopped (a refusal).
func (r *run) patchQuiet(ctx context.Context, pods []*corev1.Pod, unavailable, maxUnavailable int) (bool, error) {
	if len(pods) == 0 {
		return false, nil
	}
	var patched []string
	for _, pod := range pods {
		err := r.patchPod(ctx, pod)
		var refused *refusedError
		switch {
		case errors.As(err, &refused):
			r.fail(pod.Name, refused.Error())
			return true, nil
		case err != nil:
			return false, err
		}
		patched = append(patched, pod.Name)
	}
	r.batch++
	for _, name := range patched {
		for i := range r.pods {
			if r.pods[i].Name == name {
				r.pods[i].Phase = PhaseRestarting
			}
		}
	}
	r.report(unavailable, maxUnavailable, patched)
	return false, nil
}

// admitResize asks the API server, with a dry-run of the resize on a Pod
// that needs one, whether it accepts it (a QoS class change, a resource it
// does not resize, a policy) before any Pod is touched.
func (e *Engine) admitResize(ctx context.Context, ref diff.Ref, pod *corev1.Pod, target Target) (string, error) {
	patch, _, err := ResizePatch(pod, target)
	if err != nil || patch == nil {
		return "", err
	}
	pods := e.client.CoreV1().Pods(pod.Namespace)
	_, err = pods.Patch(ctx, pod.Name, types.JSONPatchType, patch,
		metav1.PatchOptions{FieldManager: diff.FieldManager, DryRun: []string{metav1.DryRunAll}}, resizeSubresource)
	switch {
	case err == nil, apierrors.IsNotFound(err), apierrors.IsConflict(err), forbiddenByRBAC(err):
		return "", nil
	case refusal(err) && podChanged(ctx, pods, pod):
		return "", nil // the Pod moved on; the rollout re-reads it
	case refusal(err):
		return fmt.Sprintf("the API server refuses the resize (dry-run on Pod %s): %s", pod.Name, apiMessage(err)), nil
	default:
		return "", fmt.Errorf("%s: dry-run resize of Pod %s: %w", ref, pod.Name, err)
	}
}

// splitQuiet separates the candidates whose update takes no container down.
func splitQuiet(all []Candidate, quiet map[string]bool) (loud, q []Candidate) {
	for _, c := range all {
		if quiet[c.Name] {
			q = append(q, c)
		} else {
			loud = append(loud, c)
		}
	}
	return loud, q
}

// selectQuiet chooses quiet updates to send now: they take nothing down,
// but a window of the workload's bound (at least one) keeps the writes in
// flight and the resizes a node works on at once bounded. It is a pure
// function.
func selectQuiet(pods []Candidate, maxUnavailable int) []string {
	window := max(maxUnavailable, 1)
	for _, p := range pods {
		if p.InProgress {
			window--
		}
	}
	var out []string
	for _, p := range pods {
		if window <= 0 {
			break
		}
		if !p.Done && !p.InProgress {
			out = append(out, p.Name)
			window--
		}
	}
	return out
}
