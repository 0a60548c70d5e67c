package main

import (
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/diff"
)

func TestDescribeUpdatePrePull(t *testing.T) {
	img := []diff.ImageChange{{Container: "web", From: "nginx:1.27", To: "nginx:1.28"}}
	desired := func(ann map[string]string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"kind": "Deployment"}}
		u.SetAnnotations(ann)
		return u
	}
	for _, tc := range []struct {
		name string
		ch   diff.Change
		want string
	}{
		{"pulled first", diff.Change{Path: diff.PathInPlace, Images: img, Desired: desired(nil)},
			"update in place: web nginx:1.27 → nginx:1.28, pulled on the nodes first"},
		{"pre-pull disabled", diff.Change{Path: diff.PathInPlace, Images: img, Desired: desired(map[string]string{"refit.dev/pre-pull": "disabled"})},
			"update in place: web nginx:1.27 → nginx:1.28, no pre-pull (the kubelet pulls at each restart)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := describeUpdate(tc.ch, palette{}); got != tc.want {
				t.Errorf("describeUpdate = %q, want %q", got, tc.want)
			}
		})
	}
}
