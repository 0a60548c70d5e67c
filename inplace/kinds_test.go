package inplace

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/diff"
)

func mustObject(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(manifest), &obj.Object); err != nil {
		t.Fatal(err)
	}
	return obj
}

// The StatefulSet controller's bound (getStatefulSetMaxUnavailable): a
// percentage rounds down, with at least 1, Parallel and OrderedReady alike.
func TestStatefulSetMaxUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		strategy string
		replicas int32
		want     int
	}{
		{"30% of 5 is 1", `{rollingUpdate: {maxUnavailable: 30%}}`, 5, 1},
		{"10% of 5 is at least 1", `{rollingUpdate: {maxUnavailable: 10%}}`, 5, 1},
		{"50% of 5 is 2", `{rollingUpdate: {maxUnavailable: 50%}}`, 5, 2},
		{"absolute", `{rollingUpdate: {maxUnavailable: 3}}`, 5, 3},
		{"default", `{}`, 5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			desired := mustObject(t, "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  updateStrategy: "+tc.strategy)
			s := &statefulSet{base: base{change: diff.Change{Desired: desired}}, live: &appsv1.StatefulSet{Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(tc.replicas)}}}
			if got, err := s.maxUnavailable(); err != nil || got != tc.want {
				t.Errorf("maxUnavailable = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// spec.ordinals.start moves the Pods' ordinals; the partition counts from
// it, and Pods outside the ordinals (being scaled away) are not the
// rollout's.
func TestStatefulSetOrdinals(t *testing.T) {
	live := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", UID: "sts"},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(int32(3)), Ordinals: &appsv1.StatefulSetOrdinals{Start: 5}}}
	s := &statefulSet{live: live, partition: 1}
	pod := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, OwnerReferences: []metav1.OwnerReference{
			{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", UID: "sts", Controller: ptr.To(true)}}}}
	}
	for _, tc := range []struct {
		name           string
		owns, eligible bool
		wantIndex      int
	}{
		{"db-5", true, false, 0},
		{"db-6", true, true, 1},
		{"db-7", true, true, 2},
		{"db-8", false, true, 3},
		{"db-4", false, false, -1},
		{"other-6", false, false, -1},
	} {
		p := pod(tc.name)
		if got := s.owns(p); got != tc.owns {
			t.Errorf("%s: owns = %v, want %v", tc.name, got, tc.owns)
		}
		if got := s.index(p); got != tc.wantIndex {
			t.Errorf("%s: index = %d, want %d", tc.name, got, tc.wantIndex)
		}
		if tc.owns {
			if got := s.eligible(p); got != tc.eligible {
				t.Errorf("%s: eligible = %v, want %v", tc.name, got, tc.eligible)
			}
		}
	}
}

// With a partition in Git, the Pods below it keep the current revision:
// the last rollout is complete once the others are updated, so a later
// bump still goes in place.
func TestStatefulSetPreconditions(t *testing.T) {
	sts := func(replicas, partition, updated int32) *appsv1.StatefulSet {
		return &appsv1.StatefulSet{
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(replicas), UpdateStrategy: appsv1.StatefulSetUpdateStrategy{
				Type: appsv1.RollingUpdateStatefulSetStrategyType, RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To(partition)}}},
			Status: appsv1.StatefulSetStatus{UpdatedReplicas: updated, CurrentRevision: "a", UpdateRevision: "b"},
		}
	}
	if reason := statefulSetPreconditions(sts(5, 2, 3)); reason != "" {
		t.Errorf("partition 2, 3 of 5 updated: %q, want in place possible", reason)
	}
	if reason := statefulSetPreconditions(sts(5, 2, 2)); reason == "" {
		t.Errorf("partition 2, 2 of 5 updated: want a rollout in progress")
	}
	if reason := statefulSetPreconditions(sts(5, 0, 5)); reason != "" {
		t.Errorf("complete: %q", reason)
	}
}

func TestDaemonSetBound(t *testing.T) {
	for _, tc := range []struct {
		name     string
		strategy string
		want     int
	}{
		{"default", `{}`, 1},
		{"25% of 6 rounds up", `{rollingUpdate: {maxUnavailable: 25%}}`, 2},
		{"no Pod may be down, with a surge", `{rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}`, 0},
		{"both zero is one", `{rollingUpdate: {maxUnavailable: 0, maxSurge: 0}}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			desired := mustObject(t, "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  updateStrategy: "+tc.strategy)
			if got, err := daemonSetBound(desired, 6); err != nil || got != tc.want {
				t.Errorf("daemonSetBound = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

// The ReplicaSet controller writes its status while refit copies the new
// template into the ReplicaSet: the conflict is retried on the same
// ReplicaSet (a chaos run once failed with "resource name may not be empty"
// because the failed update's empty object replaced it).
func TestDeploymentCopyTemplateRetriesAConflict(t *testing.T) {
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-abc", Namespace: "ns", Labels: map[string]string{"pod-template-hash": "abc"}},
		Spec: appsv1.ReplicaSetSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", "pod-template-hash": "abc"}},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
		}},
	}
	client := fake.NewSimpleClientset(rs)
	conflicts := 1
	client.PrependReactor("update", "replicasets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if conflicts == 0 {
			return false, nil, nil
		}
		conflicts--
		return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "replicasets"}, "web-abc", errors.New("the object has been modified"))
	})
	d := &deployment{base: base{e: &Engine{client: client}}, rs: rs.DeepCopy(), live: &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Template: corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:2"}}},
	}}}}
	if err := d.copyTemplate(context.Background()); err != nil {
		t.Fatalf("copyTemplate: %v", err)
	}
	got, err := client.AppsV1().ReplicaSets("ns").Get(context.Background(), "web-abc", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := got.Spec.Template.Spec.Containers[0].Image; img != "web:2" || got.Spec.Template.Labels["pod-template-hash"] != "abc" {
		t.Errorf("ReplicaSet template: image %s, labels %v; want web:2 with the hash kept", img, got.Spec.Template.Labels)
	}
	if d.rs.Name != "web-abc" {
		t.Errorf("d.rs is %q after the update, want web-abc", d.rs.Name)
	}
}
