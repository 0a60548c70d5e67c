package render_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/render"
)

func renderOK(t testing.TB, root, path string) []render.Object {
	t.Helper()
	objs, err := render.Render(context.Background(), render.Options{Root: root, Path: path})
	if err != nil {
		t.Fatalf("render %s: %v", path, err)
	}
	return objs
}

func ids(objs []render.Object) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName()+" "+o.File)
	}
	return out
}

// kustomizeBuild is what plain kustomize build gives for dir (the library
// the CLI is made of, with the CLI's defaults).
func kustomizeBuild(t testing.TB, dir string) []map[string]any {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	var out []map[string]any
	for _, r := range m.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			t.Fatal(err)
		}
		out = append(out, u.Object)
	}
	return out
}

func maps(objs []render.Object) []map[string]any {
	var out []map[string]any
	for _, o := range objs {
		out = append(out, o.Object)
	}
	return out
}

func TestRender(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, appRepo)
	tests := []struct {
		path string
		want []string
	}{
		{"base", []string{
			"ConfigMap/app-config-dfhbfk66mc base/kustomization.yaml",
			"Service/web base/service.yaml",
			"Deployment/web base/deployment.yaml",
		}},
		{"overlays/prod", []string{
			"Namespace/prod overlays/prod/namespace.yaml",
			"ConfigMap/prod-app-config-fgtf75m9mk base/kustomization.yaml",
			"Service/prod-web base/service.yaml",
			"Deployment/prod-web base/deployment.yaml",
			"ServiceMonitor/prod-web components/monitoring/monitor.yaml",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			objs := renderOK(t, root, tc.path)
			if diff := cmp.Diff(tc.want, ids(objs)); diff != "" {
				t.Errorf("objects (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(kustomizeBuild(t, filepath.Join(root, tc.path)), maps(objs)); diff != "" {
				t.Errorf("differs from kustomize build (-kustomize +render):\n%s", diff)
			}
			again := renderOK(t, root, tc.path)
			if diff := cmp.Diff(maps(objs), maps(again)); diff != "" {
				t.Errorf("second render differs:\n%s", diff)
			}
		})
	}
	t.Run("overlay content", func(t *testing.T) {
		objs := renderOK(t, root, "overlays/prod")
		var dep, svc *render.Object
		for i := range objs {
			switch objs[i].GetKind() {
			case "Deployment":
				dep = &objs[i]
			case "Service":
				svc = &objs[i]
			}
		}
		containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
		if img := containers[0].(map[string]any)["image"]; img != "registry.example.com/nginx:1.27" {
			t.Errorf("image = %v", img)
		}
		if r, _, _ := unstructured.NestedInt64(dep.Object, "spec", "replicas"); r != 3 || dep.GetNamespace() != "prod" || dep.GetLabels()["env"] != "prod" {
			t.Errorf("deployment = %v", dep.Object)
		}
		want := map[string]string{"team": "platform", "prometheus.io/scrape": "true"}
		if diff := cmp.Diff(want, svc.GetAnnotations()); diff != "" {
			t.Errorf("service annotations (-want +got), origin must be stripped:\n%s", diff)
		}
	})
}

func TestRenderPlainFolder(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, appRepo)
	objs := renderOK(t, root, "plain")
	want := []string{
		"ConfigMap/a plain/a.yaml",
		"ConfigMap/b1 plain/b.yml",
		"ConfigMap/b2 plain/b.yml",
		"ConfigMap/c plain/sub/c.yaml",
		"ConfigMap/k-d plain/kust/d.yaml",
	}
	if diff := cmp.Diff(want, ids(objs)); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
	if objs := renderOK(t, root, "empty"); len(objs) != 0 {
		t.Errorf("empty folder gave %v", ids(objs))
	}
}

// TestRenderKeepsRequestedOrigin: a kustomization that asks for origin
// annotations itself gets them, as from kustomize build.
func TestRenderKeepsRequestedOrigin(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"kustomization.yaml": "resources:\n- cm.yaml\nbuildMetadata: [originAnnotations]\n",
		"cm.yaml":            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
	})
	objs := renderOK(t, root, "")
	if diff := cmp.Diff(kustomizeBuild(t, root), maps(objs)); diff != "" {
		t.Errorf("differs from kustomize build:\n%s", diff)
	}
	if objs[0].GetAnnotations()["config.kubernetes.io/origin"] == "" || objs[0].File != "cm.yaml" {
		t.Errorf("object = %v, file %q", objs[0].Object, objs[0].File)
	}
}

// TestRenderMatchesKubectl compares with the kustomize inside kubectl, when
// there is one (it may be an older kustomize than the library's).
func TestRenderMatchesKubectl(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not installed")
	}
	root := t.TempDir()
	writeTree(t, root, appRepo)
	for _, path := range []string{"base", "overlays/prod"} {
		t.Run(path, func(t *testing.T) {
			out, err := exec.Command(kubectl, "kustomize", filepath.Join(root, path)).Output()
			if err != nil {
				t.Skipf("kubectl kustomize: %v", err)
			}
			var want []map[string]any
			for _, doc := range strings.Split(string(out), "\n---\n") {
				data, err := yaml.YAMLToJSON([]byte(doc))
				if err != nil {
					t.Fatal(err)
				}
				u := &unstructured.Unstructured{}
				if err := u.UnmarshalJSON(data); err != nil {
					t.Fatal(err)
				}
				want = append(want, u.Object)
			}
			if diff := cmp.Diff(want, maps(renderOK(t, root, path))); diff != "" {
				t.Errorf("differs from kubectl kustomize (-kubectl +render):\n%s", diff)
			}
		})
	}
}

func TestRenderOptions(t *testing.T) {
	if _, err := render.Render(context.Background(), render.Options{}); err == nil {
		t.Error("no root accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	root := t.TempDir()
	writeTree(t, root, appRepo)
	if _, err := render.Render(ctx, render.Options{Root: root, Path: "base"}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}
