package inplace

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/diff"
)

// admit asks the API server, with a dry-run of the image patch on one Pod
// that still needs it, what admission makes of the target before any Pod
// is touched. A refusal (a ValidatingAdmissionPolicy, a webhook,
// AlwaysPullImages, Pod Security) means the in-place path is not possible;
// a rewrite (a tag pinned to a digest, a registry mirror) becomes the
// target, so that completion does not wait for a spelling that never comes.
func (e *Engine) admit(ctx context.Context, ref diff.Ref, w workload, target Target) (Target, string, error) {
	var opts metav1.ListOptions
	w.listOptions(&opts)
	list, err := e.client.CoreV1().Pods(ref.Namespace).List(ctx, opts)
	if err != nil {
		return target, "", fmt.Errorf("%s: list Pods: %w", ref, err)
	}
	var pod *corev1.Pod
	for i := range list.Items {
		p := &list.Items[i]
		if w.owns(p) && w.eligible(p) && p.DeletionTimestamp == nil && !target.SpecAtTarget(p) {
			pod = p
			break
		}
	}
	if pod == nil {
		return target, "", nil // nothing left to patch
	}
	patch, err := PodPatch(pod, PatchInput{Target: target, Rollout: w.record().ID, Now: e.now()})
	if err != nil {
		return target, "", fmt.Errorf("%s: %w", ref, err)
	}
	pods := e.client.CoreV1().Pods(pod.Namespace)
	out, err := pods.Patch(ctx, pod.Name, types.JSONPatchType, patch,
		metav1.PatchOptions{FieldManager: diff.FieldManager, DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil:
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err), refusal(err) && podChanged(ctx, pods, pod):
		return target, "", nil // the Pod moved on; the rollout re-reads it
	case forbiddenByRBAC(err):
		// The identity may not patch Pods: no verdict on admission. The
		// rollout itself reports the refusal.
		return target, "", nil
	case refusal(err):
		return target, fmt.Sprintf("the API server refuses the image patch (dry-run on Pod %s): %s", pod.Name, apiMessage(err)), nil
	default:
		return target, "", fmt.Errorf("%s: dry-run image patch of Pod %s: %w", ref, pod.Name, err)
	}
	if fallback, err := e.admitResize(ctx, ref, pod, target); err != nil || fallback != "" {
		return target, fallback, err
	}
	admitted := target
	admitted.Containers, admitted.Init = map[string]string{}, map[string]string{}
	admitted.Labels, admitted.Annotations = admittedMetadata(target.Labels, out.Labels), admittedMetadata(target.Annotations, out.Annotations)
	for name, img := range target.Containers {
		admitted.Containers[name] = img
		if got, _, ok := specImage(out, name, false); ok && got != img {
			admitted.Containers[name] = got
		}
	}
	for name, img := range target.Init {
		admitted.Init[name] = img
		if got, _, ok := specImage(out, name, true); ok && got != img {
			admitted.Init[name] = got
		}
	}
	return admitted, "", nil
}

// refusal reports an error with which the API server turned a request
// down for what it says (admission, validation), as opposed to a
// transient failure that a retry may get past.
func refusal(err error) bool {
	status, ok := err.(apierrors.APIStatus)
	if !ok {
		return false
	}
	code := status.Status().Code
	return code >= 400 && code < 500 && code != 404 && code != 409 && code != 429 && code != 408
}

// forbiddenByRBAC tells the authorizer's 403 from an admission plugin's.
func forbiddenByRBAC(err error) bool {
	return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "cannot patch resource")
}

func apiMessage(err error) string {
	if status, ok := err.(apierrors.APIStatus); ok && status.Status().Message != "" {
		return status.Status().Message
	}
	return err.Error()
}
