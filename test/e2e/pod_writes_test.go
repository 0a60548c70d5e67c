//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
)

// Every write refit builds for a Pod (the image patch, the resize, the
// gate) names the Pod by UID. A StatefulSet Pod deleted and recreated under
// its name between refit's read and its write has the same name, the same
// old image (the partition keeps the old revision) and the same first
// generation: without the UID, a write built for the old Pod is taken by
// the new one, which refit then counts as updated and available, past the
// bound. The real API server must refuse all three and leave the new Pod
// untouched, and take them once built for the new Pod itself.
func TestPodWritesNameThePodTheyWereBuiltFor(t *testing.T) {
	ns := namespace(t)
	ctx := context.Background()
	pods := bed.Client.CoreV1().Pods(ns)
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{Name: "app", Image: "nginx:1.27", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("64Mi")},
		}}},
		NodeSelector: map[string]string{cluster.NodeTypeLabel: "kwok"},
	}
	create := func() *corev1.Pod {
		createPod(t, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: ns}, Spec: *spec.DeepCopy()})
		return waitPod(t, ns, "db-0", 60*time.Second, "running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	}
	target := inplace.Target{
		Containers: map[string]string{"app": "nginx:1.28"},
		Resources:  map[string]inplace.ContainerResources{"app": {"requests.cpu": resource.MustParse("200m")}},
	}
	type write struct {
		name        string
		patchType   types.PatchType
		subresource string
		build       func(*corev1.Pod) []byte
	}
	writes := []write{
		{"image patch", types.JSONPatchType, "", func(p *corev1.Pod) []byte {
			raw, err := inplace.PodPatch(p, inplace.PatchInput{Target: target, Rollout: "r1", Now: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}},
		{"resize", types.JSONPatchType, "resize", func(p *corev1.Pod) []byte {
			raw, _, err := inplace.ResizePatch(p, target)
			if err != nil || raw == nil {
				t.Fatalf("resize patch: %s, %v", raw, err)
			}
			return raw
		}},
		{"gate", types.StrategicMergePatchType, "status", func(p *corev1.Pod) []byte {
			raw, err := inplace.GatePatch(p, corev1.ConditionFalse, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}},
	}
	send := func(w write, patch []byte) error {
		var sub []string
		if w.subresource != "" {
			sub = []string{w.subresource}
		}
		_, err := pods.Patch(ctx, "db-0", w.patchType, patch, metav1.PatchOptions{FieldManager: diff.FieldManager}, sub...)
		return err
	}

	old := create()
	built := make([][]byte, len(writes))
	for i, w := range writes {
		built[i] = w.build(old)
	}
	if err := pods.Delete(ctx, "db-0", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "the old db-0 gone", func(ctx context.Context) (bool, string) {
		p, err := pods.Get(ctx, "db-0", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, ""
		}
		return err == nil && p.UID != old.UID, "still there"
	})
	recreated := create()
	if recreated.UID == old.UID {
		t.Fatal("the recreated Pod has the old UID")
	}

	for i, w := range writes {
		err := send(w, built[i])
		if err == nil || !apierrors.IsInvalid(err) && !apierrors.IsConflict(err) && !apierrors.IsBadRequest(err) {
			t.Errorf("%s built for the old db-0, sent to the recreated one: %v; want it refused", w.name, err)
		} else {
			t.Logf("%s built for the old db-0: refused: %v", w.name, err)
		}
	}
	now, err := pods.Get(ctx, "db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.ResourceVersion != recreated.ResourceVersion && !sameWrites(recreated, now) {
		t.Errorf("the recreated db-0 changed: image %s, cpu %s, state %q, gate %v",
			now.Spec.Containers[0].Image, now.Spec.Containers[0].Resources.Requests.Cpu(), now.Annotations[inplace.StateAnnotation], gateOf(now))
	}

	// Built for the Pod itself, each is taken.
	for _, w := range writes {
		cur, err := pods.Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := send(w, w.build(cur)); err != nil {
			t.Errorf("%s built for the recreated db-0: %v", w.name, err)
		}
	}
	now, err = pods.Get(ctx, "db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if now.Spec.Containers[0].Image != "nginx:1.28" || now.Spec.Containers[0].Resources.Requests.Cpu().String() != "200m" ||
		now.Annotations[inplace.StateAnnotation] == "" || gateOf(now) != corev1.ConditionFalse {
		t.Errorf("after the writes built for it: image %s, cpu %s, state %q, gate %v", now.Spec.Containers[0].Image,
			now.Spec.Containers[0].Resources.Requests.Cpu(), now.Annotations[inplace.StateAnnotation], gateOf(now))
	}
}

// sameWrites: none of refit's writes reached the Pod (the node may have
// updated its status meanwhile).
func sameWrites(before, after *corev1.Pod) bool {
	return after.Spec.Containers[0].Image == before.Spec.Containers[0].Image &&
		after.Spec.Containers[0].Resources.Requests.Cpu().Cmp(*before.Spec.Containers[0].Resources.Requests.Cpu()) == 0 &&
		after.Annotations[inplace.StateAnnotation] == "" && gateOf(after) == ""
}
