package inplace

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
)

// barePod is a Pod without a controller: only its own images change. Its
// record is its own state annotation: the rollout ID is derived from the
// target, so a restarted refit finds the patch it made.
type barePod struct {
	base
	uid string
}

func (p *barePod) precheck(ctx context.Context) (string, error) {
	pod, err := p.e.client.CoreV1().Pods(p.change.Ref.Namespace).Get(ctx, p.change.Ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("%s: %w", p.change.Ref, err)
	}
	if metav1.GetControllerOf(pod) != nil {
		return "the Pod has a controller", nil
	}
	p.uid = string(pod.UID)
	rec, err := p.e.newRecordOf(&pod.Spec)
	if err != nil {
		return "", fmt.Errorf("%s: %w", p.change.Ref, err)
	}
	rec.ID = "pod-" + p.target.Revision
	if state, ok := stateOf(pod, rec.ID); ok {
		// Resuming: the images before the patch are in the state.
		for name, c := range state.Containers {
			key := "containers/" + name
			if c.Init {
				key = "initContainers/" + name
			}
			rec.Origin[key] = c.Origin
		}
	}
	p.rec = resumed(rec, p.target)
	return "", nil
}

func (p *barePod) owns(pod *corev1.Pod) bool { return string(pod.UID) == p.uid }

// listOptions watch the one Pod by name: a Pod without labels must not
// mean its whole namespace.
func (p *barePod) listOptions(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.change.Ref.Name).String()
}
func (p *barePod) revisionLabels() map[string]string { return nil }
func (p *barePod) eligible(*corev1.Pod) bool         { return true }
func (p *barePod) ordinal(*corev1.Pod) int           { return -1 }
func (p *barePod) minReadySeconds() int32            { return 0 }
func (p *barePod) maxUnavailable() (int, error)      { return 1, nil }
func (p *barePod) expected() int                     { return 1 }
func (p *barePod) progressDeadline() time.Duration   { return 0 }
func (p *barePod) refresh(context.Context) error     { return nil }
func (p *barePod) release(context.Context) error     { return nil }
func (p *barePod) prepare(context.Context) error     { return nil }
