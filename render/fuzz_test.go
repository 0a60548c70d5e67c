package render_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/render"
)

// outsideMarker is the content of a file next to the repository: no
// render may ever put it into an object.
const outsideMarker = "refit-fuzz-outside-secret"

// FuzzRender renders a repository of one kustomization and one manifest
// (kustomization.yaml and cm.yaml in app/, a base in base/, a file
// outside the root). Whatever the input: no panic, an answer within
// seconds, an error or objects (never both, never neither with no
// error), and nothing read from outside the root.
//
//	go test -run '^$' -fuzz '^FuzzRender$' -fuzztime 10s ./render/
func FuzzRender(f *testing.F) {
	seeds := [][2]string{
		{"resources:\n- cm.yaml\n", cm},
		{"resources:\n- cm.yaml\n- ../base\nnamePrefix: p-\n", cm},
		{"", cm + "---\n" + strings.Replace(cm, "name: x", "name: y", 1)},
		{"resources:\n- cm.yaml\npatches:\n- path: cm.yaml\n", cm + "data:\n  a: b\n"},
		{"configMapGenerator:\n- name: g\n  files:\n  - cm.yaml\n  literals:\n  - a=b\n", "raw data"},
		{"resources:\n- ../../outside/secret.yaml\n", cm},
		{"resources:\n- cm.yaml\nimages:\n- name: nginx\n  newTag: '1'\n", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        image: nginx\n"},
		{"resources:\n- cm.yaml\n", billionLaughs()},
		{"resources:\n- https://example.com/x.yaml\n", cm},
		{"helmCharts:\n- name: x\n", cm},
		{"resources:\n- cm.yaml\nopenapi:\n  path: cm.yaml\n", "{}"},
		{"a: &a [*a]\n", "&x [*x, *x]"},
		{"resources: [cm.yaml]\nreplacements:\n- source: {kind: ConfigMap, fieldPath: metadata.name}\n  targets: [{select: {kind: ConfigMap}, fieldPaths: [data.n], options: {create: true}}]\n", cm},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, kustomization, manifest string) {
		tmp := t.TempDir()
		root := filepath.Join(tmp, "repo")
		files := map[string]string{
			"app/cm.yaml":             manifest,
			"base/kustomization.yaml": "resources:\n- cm.yaml\n",
			"base/cm.yaml":            strings.Replace(cm, "name: x", "name: base", 1),
		}
		if kustomization != "" {
			files["app/kustomization.yaml"] = kustomization
		}
		writeTree(t, root, files)
		writeTree(t, filepath.Join(tmp, "outside"), map[string]string{
			"secret.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + outsideMarker + "\n",
		})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		start := time.Now()
		objs, err := render.Render(ctx, render.Options{Root: root, Path: "app", Limits: render.Limits{MaxFileBytes: 1 << 20}})
		if took := time.Since(start); took > 10*time.Second || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("render took %v (%v)", took, err)
		}
		if err != nil {
			if objs != nil {
				t.Fatalf("objects with an error: %v", err)
			}
			if strings.Contains(err.Error(), "kustomize panicked") {
				// Recovered, reported as a bad commit: kustomize's bug, not
				// a crash of refit. Logged so a fuzz run shows it.
				t.Logf("kustomize panicked on this input: %v", err)
			}
			return
		}
		var out strings.Builder
		if err := render.Encode(&out, objs); err != nil {
			t.Fatalf("encode: %v", err)
		}
		var back []map[string]any
		for _, doc := range strings.Split(out.String(), "\n---\n") {
			if doc == "" {
				continue // nothing rendered
			}
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				t.Fatalf("encoded YAML does not parse: %v\n%s", err, doc)
			}
			back = append(back, obj)
		}
		if len(back) != len(objs) {
			t.Fatalf("encoded %d objects as %d documents", len(objs), len(back))
		}
		if strings.Contains(out.String(), outsideMarker) {
			t.Fatalf("a file outside the root was rendered:\n%s", out.String())
		}
		if _, err := os.Stat(filepath.Join(root, "app", "kustomization.yaml")); kustomization == "" && !os.IsNotExist(err) {
			t.Fatal("render wrote a kustomization into the checkout")
		}
	})
}
