package render_test

import (
	"context"
	"strings"
	"testing"

	"github.com/refit-gitops/refit/render"
)

// TestErrorMessages: a broken repository gives an error that names the
// file (and the line, for malformed YAML).
func TestErrorMessages(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"malformed resource", map[string]string{
			"kustomization.yaml": "resources:\n- cm.yaml\n",
			"cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [a\n",
		}, []string{"cm.yaml", "line"}},
		{"malformed kustomization", map[string]string{
			"kustomization.yaml": "resources:\n- cm.yaml\n  bad: [\n",
		}, []string{"kustomization.yaml", "line 3"}},
		{"missing resource", map[string]string{
			"kustomization.yaml": "resources:\n- nope.yaml\n",
		}, []string{"nope.yaml"}},
		{"patch target missing", map[string]string{
			"kustomization.yaml": "resources:\n- cm.yaml\npatches:\n- path: p.yaml\n",
			"cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
			"p.yaml":             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  a: b\n",
		}, []string{"other"}},
		{"plain folder malformed", map[string]string{
			"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
			"b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n\tname: b\n",
		}, []string{"b.yaml", "line 4"}},
		{"plain folder mixing objects and others", map[string]string{
			"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n---\nfoo: bar\n",
		}, []string{"a.yaml", "document 2", "line 6"}},
		{"duplicate object", map[string]string{
			"a.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
			"b.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
		}, []string{"ConfigMap", "a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.files)
			_, err := render.Render(context.Background(), render.Options{Root: root})
			if err == nil {
				t.Fatal("render succeeded")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
