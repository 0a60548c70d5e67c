package apply

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/diff"
)

func TestEventString(t *testing.T) {
	web := diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{Event{Ref: web, Action: Created}, "Deployment.apps/shop/web created"},
		{Event{Ref: web, Action: SkippedProtected, Message: "refit.dev/prune: disabled"}, "Deployment.apps/shop/web skipped-protected: refit.dev/prune: disabled"},
		{Event{Ref: web, Status: "InProgress", Message: "Updated: 2/3"}, "waiting for Deployment.apps/shop/web: Updated: 2/3"},
		{Event{Ref: web, Status: "Current", Message: "Deployment is available. Replicas: 3"}, "Deployment.apps/shop/web ready: Deployment is available. Replicas: 3"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.e.String(); got != tc.want {
				t.Errorf("got %q", got)
			}
		})
	}
}

func TestResultSummary(t *testing.T) {
	r := &Result{Objects: []ObjectResult{{Action: Created}, {Action: Created}, {Action: Unchanged}, {Action: InPlace}}, Health: Healthy}
	if got, want := r.Summary(), "2 created, 1 unchanged, 1 in-place; healthy"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := (&Result{}).Summary(); got != "nothing to do" {
		t.Errorf("empty: got %q", got)
	}
}

func TestDescribePods(t *testing.T) {
	waiting := func(name, reason string) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{
			{Name: "main", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: "pull failed"}}}}}}
	}
	deleted := waiting("old", "ErrImagePull")
	deleted.DeletionTimestamp = &metav1.Time{}
	got := describePods([]corev1.Pod{waiting("b", "ImagePullBackOff"), waiting("a", "ContainerCreating"), deleted, waiting("c", "ErrImagePull")}, 3)
	want := "pod b: container main: ImagePullBackOff: pull failed; pod c: container main: ErrImagePull: pull failed"
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if got := describePods(nil, 3); got != "" {
		t.Errorf("no pods: %q", got)
	}
	if !strings.Contains(describePods([]corev1.Pod{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Status: corev1.PodStatus{Conditions: []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/4 nodes"}}}}}, 3), "Unschedulable: 0/4 nodes") {
		t.Error("unschedulable pod not described")
	}
}
