package inplace

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/refit-gitops/refit/diff"
)

// barePod is a Pod without a controller: only its own images change.
type barePod struct {
	e      *Engine
	change diff.Change
	sel    labels.Selector
	uid    string
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
	p.sel = labels.SelectorFromSet(pod.Labels)
	return "", nil
}

func (p *barePod) owns(pod *corev1.Pod) bool {
	return string(pod.UID) == p.uid
}
func (p *barePod) selector() labels.Selector         { return p.sel }
func (p *barePod) revisionLabels() map[string]string { return nil }
func (p *barePod) eligible(*corev1.Pod) bool         { return true }
func (p *barePod) ordinal(*corev1.Pod) int           { return -1 }
func (p *barePod) minReadySeconds() int32            { return 0 }
func (p *barePod) maxUnavailable() (int, error)      { return 1, nil }
func (p *barePod) progressDeadline() time.Duration   { return 0 }
func (p *barePod) check(context.Context) error       { return nil }
func (p *barePod) release(context.Context) error     { return nil }
func (p *barePod) prepare(context.Context) error     { return nil }

func (p *barePod) previousLabels() map[string]string { return nil }
