package render_test

import (
	"testing"

	"github.com/refit-gitops/refit/render"
)

// TestReadsRecordInputs renders apps of one repository and checks the
// paths recorded: the app's own folder, and each file and folder outside
// it that the build consulted, never the root or a sibling app.
func TestReadsRecordInputs(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"base/kustomization.yaml":   "resources:\n- cm.yaml\n",
		"base/cm.yaml":              cm,
		"apps/a/kustomization.yaml": "namePrefix: a-\nresources:\n- ../../base\n",
		"shared/extra.yaml":         "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n",
		"shared/other.yaml":         "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n",
		"apps/b/cm.yaml":            cm,
		"apps/c/kustomization.yaml": "namePrefix: c-\nresources:\n- cm.yaml\n- ../../shared\n",
		"shared/kustomization.yaml": "resources:\n- extra.yaml\n",
		"apps/c/cm.yaml":            cm,
	})
	for _, tc := range []struct {
		name, path string
		// want must be among the recorded paths; never must not.
		want, never []string
	}{
		{name: "base outside the path", path: "apps/a",
			want:  []string{"apps/a", "base", "base/cm.yaml", "base/kustomization.yaml"},
			never: []string{".", "apps", "apps/b", "shared", "shared/other.yaml"}},
		{name: "plain folder", path: "apps/b",
			want:  []string{"apps/b"},
			never: []string{".", "apps", "apps/a", "base"}},
		{name: "second base", path: "apps/c",
			want:  []string{"apps/c", "shared/extra.yaml", "shared/kustomization.yaml"},
			never: []string{".", "apps", "apps/a", "shared/other.yaml", "base"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reads := render.NewReads()
			if _, err := render.Render(t.Context(), render.Options{Root: root, Path: tc.path, Reads: reads}); err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, p := range reads.Paths() {
				got[p] = true
			}
			for _, p := range tc.want {
				if !got[p] {
					t.Errorf("%s not recorded; recorded %v", p, reads.Paths())
				}
			}
			for _, p := range tc.never {
				if got[p] {
					t.Errorf("%s recorded: every commit would look like a change to this app; recorded %v", p, reads.Paths())
				}
			}
			if u := reads.Uncertain(); u != "" {
				t.Errorf("uncertain: %s", u)
			}
		})
	}
	t.Run("remote bases allowed are uncertain", func(t *testing.T) {
		reads := render.NewReads()
		if _, err := render.Render(t.Context(), render.Options{Root: root, Path: "apps/b", Reads: reads, AllowRemoteBases: true}); err != nil {
			t.Fatal(err)
		}
		if reads.Uncertain() == "" {
			t.Error("a render that may fetch remote bases is not uncertain")
		}
	})
}
