package inplace

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/diff"
)

// failedWeb is a Deployment whose rollout failed: a new image, a new CPU
// request, a label and an annotation added and the label old removed.
const failedWeb = `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "ns"},
 "spec": {"template": {"metadata": {"labels": {"app": "web", "tier": "new"}, "annotations": {"note": "new"}},
  "spec": {"containers": [{"name": "app", "image": "app:2",
   "resources": {"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}}}}`

const failedPod = `{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "solo", "namespace": "ns", "labels": {"tier": "new"}},
 "spec": {"containers": [{"name": "app", "image": "app:2", "resources": {"requests": {"cpu": "200m"}}}]}}`

func object(t *testing.T, raw string) *unstructured.Unstructured {
	t.Helper()
	obj := &unstructured.Unstructured{}
	if err := json.Unmarshal([]byte(raw), &obj.Object); err != nil {
		t.Fatal(err)
	}
	return obj
}

// fullRecord is what a rollout of failedWeb records of the template before it.
func fullRecord() rolloutRecord {
	return rolloutRecord{
		Origin: map[string]string{"containers/app": "app:1"},
		OriginResources: map[string]corev1.ResourceRequirements{"app": {
			Requests: corev1.ResourceList{corev1.ResourceCPU: q("100m"), corev1.ResourceMemory: q("64Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: q("128Mi")},
		}},
		OriginMetadata: &templateMetadata{Labels: map[string]string{"app": "web", "old": "yes"}},
	}
}

func TestRollbackRestoresTheTemplate(t *testing.T) {
	type want struct {
		template  string // the restored template, as JSON
		removed   []diff.MetadataChange
		resources map[string]ContainerResources
		labels    map[string]string
		remove    []string // labels, then annotations
	}
	for _, tc := range []struct {
		name   string
		failed string
		rec    rolloutRecord
		want   want
	}{{
		name:   "images, resources and metadata kept",
		failed: failedWeb,
		rec:    fullRecord(),
		want: want{
			template: `{"metadata": {"labels": {"app": "web", "old": "yes"}},
			  "spec": {"containers": [{"name": "app", "image": "app:1",
			   "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}}`,
			removed:   []diff.MetadataChange{{Kind: "label", Key: "tier", From: "new", Removed: true}, {Kind: "annotation", Key: "note", From: "new", Removed: true}},
			resources: map[string]ContainerResources{"app": {"requests.cpu": q("100m"), "requests.memory": q("64Mi"), "limits.memory": q("128Mi")}},
			labels:    map[string]string{"app": "web", "old": "yes"},
			remove:    []string{"tier", "note"},
		},
	}, {
		name:   "a record of images only (written before resources were kept)",
		failed: failedWeb,
		rec:    rolloutRecord{Origin: map[string]string{"containers/app": "app:1"}},
		want: want{
			template: `{"metadata": {"labels": {"app": "web", "tier": "new"}, "annotations": {"note": "new"}},
			  "spec": {"containers": [{"name": "app", "image": "app:1",
			   "resources": {"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}}]}}`,
		},
	}, {
		name:   "a container the template had without resources",
		failed: failedWeb,
		rec: rolloutRecord{Origin: map[string]string{"containers/app": "app:1"},
			OriginResources: map[string]corev1.ResourceRequirements{"app": {}}},
		want: want{
			template: `{"metadata": {"labels": {"app": "web", "tier": "new"}, "annotations": {"note": "new"}},
			  "spec": {"containers": [{"name": "app", "image": "app:1"}]}}`,
			resources: map[string]ContainerResources{},
		},
	}, {
		name:   "a bare Pod: images only",
		failed: failedPod,
		rec:    fullRecord(),
		want: want{
			template: `{"containers": [{"name": "app", "image": "app:1", "resources": {"requests": {"cpu": "200m"}}}]}`,
		},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			failed := object(t, tc.failed)
			orig := failed.DeepCopy()
			got, removed, err := rollbackDesired(failed, tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(orig.Object, failed.Object); diff != "" {
				t.Errorf("the failed object was changed (-before +after):\n%s", diff)
			}
			var wantTemplate map[string]any
			if err := json.Unmarshal([]byte(tc.want.template), &wantTemplate); err != nil {
				t.Fatal(err)
			}
			path := []string{"spec", "template"}
			if got.GetKind() == "Pod" {
				path = []string{"spec"}
			}
			gotTemplate, _, _ := unstructured.NestedMap(got.Object, path...)
			if diff := cmp.Diff(wantTemplate, gotTemplate); diff != "" {
				t.Errorf("template (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want.removed, removed); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
			target, err := rollbackTarget(diff.Change{Ref: diff.Ref{Kind: got.GetKind(), Name: got.GetName()}, Desired: got, Metadata: removed}, tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			if target.Containers["app"] != "app:1" {
				t.Errorf("target image %q; want app:1", target.Containers["app"])
			}
			if diff := cmp.Diff(tc.want.resources, target.Resources, cmp.Comparer(equalResources)); diff != "" {
				t.Errorf("target resources (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want.labels, target.Labels); diff != "" {
				t.Errorf("target labels (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.want.remove, append(target.RemoveLabels, target.RemoveAnnotations...)); diff != "" {
				t.Errorf("target removals, labels then annotations (-want +got):\n%s", diff)
			}
		})
	}
}

func equalResources(a, b ContainerResources) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.Cmp(v) != 0 {
			return false
		}
	}
	return true
}

// TestWithOrigin: the record keeps a copy of the live template's
// resources and metadata, not the cache's maps.
func TestWithOrigin(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{}
	tmpl.Labels = map[string]string{"app": "web"}
	tmpl.Spec.Containers = []corev1.Container{{Name: "app", Resources: *reqs("100m", "")}, {Name: "side"}}
	rec := withOrigin(rolloutRecord{}, tmpl)
	tmpl.Labels["app"] = "changed"
	tmpl.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = q("1")
	want := rolloutRecord{
		OriginResources: map[string]corev1.ResourceRequirements{"app": *reqs("100m", ""), "side": {}},
		OriginMetadata:  &templateMetadata{Labels: map[string]string{"app": "web"}},
	}
	if diff := cmp.Diff(want, rec, cmp.Comparer(func(a, b corev1.ResourceList) bool { return equalList(a, b) })); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	back, ok := readRecord(map[string]string{RolloutAnnotation: string(raw)})
	if !ok || !equalList(back.OriginResources["app"].Requests, rec.OriginResources["app"].Requests) {
		t.Errorf("record after JSON: %s", raw)
	}
}

func equalList(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w.Cmp(v) != 0 {
			return false
		}
	}
	return true
}
