package render_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/refit-gitops/refit/render"
)

const cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"

// TestEscapes tries every way out of the repository root we know of. The
// root is <tmp>/repo; <tmp>/outside holds files a build must never read.
func TestEscapes(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		links map[string]string // link (in repo) → target
		path  string
		allow bool
		want  error
	}{
		{name: "resource via ..", files: map[string]string{"app/kustomization.yaml": "resources:\n- ../../outside/cm.yaml\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "base via ..", files: map[string]string{"app/kustomization.yaml": "resources:\n- ../../outside\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "absolute resource", files: map[string]string{"app/kustomization.yaml": "resources:\n- /etc/hostname\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "resource symlink to /etc", files: map[string]string{"app/kustomization.yaml": "resources:\n- host.yaml\n"}, links: map[string]string{"app/host.yaml": "/etc/hostname"}, path: "app", want: render.ErrOutsideRoot},
		{name: "symlinked base dir", files: map[string]string{"app/kustomization.yaml": "resources:\n- base\n"}, links: map[string]string{"app/base": "OUTSIDE"}, path: "app", want: render.ErrOutsideRoot},
		{name: "symlinked parent in path", files: map[string]string{"app/kustomization.yaml": "resources:\n- base/cm.yaml\n"}, links: map[string]string{"app/base": "OUTSIDE"}, path: "app", want: render.ErrOutsideRoot},
		{name: "patch file outside", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\npatches:\n- path: ../../outside/patch.yaml\n", "app/cm.yaml": cm}, path: "app", want: render.ErrOutsideRoot},
		{name: "strategic merge patch outside", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\npatchesStrategicMerge:\n- ../../outside/patch.yaml\n", "app/cm.yaml": cm}, path: "app", want: render.ErrOutsideRoot},
		{name: "generator file outside", files: map[string]string{"app/kustomization.yaml": "configMapGenerator:\n- name: g\n  files:\n  - secret=../../outside/secret.txt\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "generator env outside", files: map[string]string{"app/kustomization.yaml": "configMapGenerator:\n- name: g\n  envs:\n  - /etc/environment\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "generator file symlink", files: map[string]string{"app/kustomization.yaml": "configMapGenerator:\n- name: g\n  files:\n  - passwd\n"}, links: map[string]string{"app/passwd": "/etc/passwd"}, path: "app", want: render.ErrOutsideRoot},
		{name: "component outside", files: map[string]string{"app/kustomization.yaml": "components:\n- ../../outside\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "escape in a nested base", files: map[string]string{"app/kustomization.yaml": "resources:\n- ../base\n", "base/kustomization.yaml": "resources:\n- ../../outside/cm.yaml\n"}, path: "app", want: render.ErrOutsideRoot},
		{name: "openapi schema outside", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\nopenapi:\n  path: ../../outside/schema.json\n", "app/cm.yaml": cm}, path: "app", want: render.ErrOutsideRoot},
		{name: "plain folder with a symlink out", files: map[string]string{"app/a.yaml": cm}, links: map[string]string{"app/b.yaml": "OUTSIDE/cm.yaml"}, path: "app", want: render.ErrOutsideRoot},
		{name: "plain folder with a symlinked dir", files: map[string]string{"app/a.yaml": cm}, links: map[string]string{"app/sub": "OUTSIDE"}, path: "app", want: render.ErrOutsideRoot},
		{name: "build path via ..", path: "../outside", want: render.ErrOutsideRoot},
		{name: "absolute build path", path: "/etc", want: render.ErrOutsideRoot},
		{name: "build path symlink", links: map[string]string{"app": "OUTSIDE"}, path: "app", want: render.ErrOutsideRoot},
		{name: "kustomization symlink", links: map[string]string{"app/kustomization.yaml": "OUTSIDE/kustomization.yaml"}, path: "app", want: render.ErrOutsideRoot},
		{name: "remote github base", files: map[string]string{"app/kustomization.yaml": "resources:\n- github.com/acme/app//deploy?ref=v1\n"}, path: "app", want: render.ErrNotAllowed},
		{name: "remote https file", files: map[string]string{"app/kustomization.yaml": "resources:\n- https://example.com/cm.yaml\n"}, path: "app", want: render.ErrNotAllowed},
		{name: "remote scp-like base", files: map[string]string{"app/kustomization.yaml": "resources:\n- git@github.com:acme/app.git\n"}, path: "app", want: render.ErrNotAllowed},
		{name: "remote patch", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\npatches:\n- path: https://example.com/p.yaml\n", "app/cm.yaml": cm}, path: "app", want: render.ErrNotAllowed},
		{name: "file:// base even when remote is allowed", files: map[string]string{"app/kustomization.yaml": "resources:\n- file:///etc//x\n"}, path: "app", allow: true, want: render.ErrNotAllowed},
		{name: "helm chart", files: map[string]string{"app/kustomization.yaml": "helmCharts:\n- name: redis\n  repo: https://charts.example.com\n"}, path: "app", want: render.ErrNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			root, outside := filepath.Join(tmp, "repo"), filepath.Join(tmp, "outside")
			writeTree(t, outside, map[string]string{
				"cm.yaml":            cm,
				"kustomization.yaml": "resources:\n- cm.yaml\n",
				"patch.yaml":         "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  stolen: \"yes\"\n",
				"secret.txt":         "s3cret\n",
				"schema.json":        "{}\n",
			})
			if err := os.MkdirAll(root, 0o755); err != nil {
				t.Fatal(err)
			}
			writeTree(t, root, tc.files)
			for link, target := range tc.links {
				symlink(t, strings.Replace(target, "OUTSIDE", outside, 1), filepath.Join(root, link))
			}
			objs, err := render.Render(context.Background(), render.Options{Root: root, Path: tc.path, AllowRemoteBases: tc.allow})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v (objects %v), want %v", err, ids(objs), tc.want)
			}
			t.Log(err)
		})
	}
}

// TestLinksInsideAllowed: a symlinked base that stays inside the
// repository works, in a kustomization and in a plain folder. (A symlinked
// file that leaves its kustomization's directory is refused by kustomize's
// own root-only rule, as kustomize build does.)
func TestLinksInsideAllowed(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"shared/kustomization.yaml": "resources:\n- cm.yaml\n",
		"shared/cm.yaml":            cm,
		"app/kustomization.yaml":    "resources:\n- base\n",
	})
	symlink(t, "../shared", filepath.Join(root, "app", "base"))
	symlink(t, "../shared", filepath.Join(root, "plain", "base"))
	for _, path := range []string{"app", "plain"} {
		objs := renderOK(t, root, path)
		if len(objs) != 1 || objs[0].GetName() != "x" || objs[0].File != "app/base/cm.yaml" && objs[0].File != "plain/base/cm.yaml" {
			t.Fatalf("%s: objects = %v", path, ids(objs))
		}
	}
}

// TestNoPlugins: exec and container KRM functions and external plugins
// are refused by kustomize's builtins-only plugin configuration.
func TestNoPlugins(t *testing.T) {
	tests := map[string]string{
		"exec function": `apiVersion: example.com/v1
kind: Exec
metadata:
  name: pwn
  annotations:
    config.kubernetes.io/function: |
      exec:
        path: /bin/sh
`,
		"container function": `apiVersion: example.com/v1
kind: Fn
metadata:
  name: pwn
  annotations:
    config.kubernetes.io/function: |
      container:
        image: example.com/evil:latest
`,
		"external plugin": "apiVersion: someteam.example.com/v1\nkind: ChartInflator\nmetadata:\n  name: x\n",
	}
	for name, plugin := range tests {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, map[string]string{
				"kustomization.yaml": "resources:\n- cm.yaml\ntransformers:\n- plugin.yaml\n",
				"cm.yaml":            cm,
				"plugin.yaml":        plugin,
			})
			_, err := render.Render(context.Background(), render.Options{Root: root})
			if err == nil {
				t.Fatal("plugin ran")
			}
			t.Log(err)
		})
	}
}
