package render_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/render"
)

// renderWithin renders with a deadline, so an input that would hang the
// build (a FIFO) fails the test instead of hanging it.
func renderWithin(t *testing.T, d time.Duration, opts render.Options) ([]render.Object, error) {
	t.Helper()
	type result struct {
		objs []render.Object
		err  error
	}
	done := make(chan result, 1)
	go func() {
		objs, err := render.Render(t.Context(), opts)
		done <- result{objs, err}
	}()
	select {
	case r := <-done:
		return r.objs, r.err
	case <-time.After(d):
		t.Fatalf("render of %s did not return within %v", opts.Path, d)
		return nil, nil
	}
}

// kubectlKustomize is what `kubectl kustomize dir` prints, as objects.
func kubectlKustomize(t *testing.T, dir string) []map[string]any {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		return kustomizeBuild(t, dir) // the library kubectl is built from
	}
	out, err := exec.Command(kubectl, "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v", dir, err)
	}
	var objs []map[string]any
	for _, doc := range strings.Split(string(out), "\n---\n") {
		data, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(data); err != nil {
			t.Fatal(err)
		}
		objs = append(objs, u.Object)
	}
	return objs
}

// TestPathsAreData renders repositories and folders whose names kyaml's
// in-memory filesystem refuses ("illegal name 'team+ops' in directory
// creation"): each renders as kubectl kustomize renders it.
func TestPathsAreData(t *testing.T) {
	root := filepath.Join(t.TempDir(), "my+repo")
	writeTree(t, root, map[string]string{
		"team+ops/kustomization.yaml":          "namePrefix: ops-\nresources:\n- cm.yaml\n",
		"team+ops/cm.yaml":                     cm,
		"envs/prod @eu (2)/kustomization.yaml": "namespace: prod\nresources:\n- ../../team+ops\n- extra=1.yaml\n",
		"envs/prod @eu (2)/extra=1.yaml":       "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n",
		"plain+folder/a.yaml":                  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
		"plain+folder/sub+dir/b.yaml":          "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n",
	})
	for _, path := range []string{"team+ops", "envs/prod @eu (2)"} {
		t.Run(path, func(t *testing.T) {
			objs, err := render.Render(t.Context(), render.Options{Root: root, Path: path})
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(kubectlKustomize(t, filepath.Join(root, path)), maps(objs)); diff != "" {
				t.Errorf("differs from kubectl kustomize (-kubectl +render):\n%s", diff)
			}
		})
	}
	t.Run("plain folder", func(t *testing.T) {
		objs, err := render.Render(t.Context(), render.Options{Root: root, Path: "plain+folder"})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"ConfigMap/a plain+folder/a.yaml", "ConfigMap/b plain+folder/sub+dir/b.yaml"}
		if diff := cmp.Diff(want, ids(objs)); diff != "" {
			t.Errorf("objects (-want +got):\n%s", diff)
		}
	})
}

// billionLaughs is a 9-level alias bomb: 9^9 (387 million) nodes expanded,
// under 700 bytes written.
func billionLaughs() string {
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\ndata:\n  a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n")
	prev := "a"
	for _, c := range "bcdefghi" {
		fmt.Fprintf(&b, "  %c: &%c [*%s,*%s,*%s,*%s,*%s,*%s,*%s,*%s,*%s]\n", c, c, prev, prev, prev, prev, prev, prev, prev, prev, prev)
		prev = string(c)
	}
	return b.String()
}

// TestAliasBomb renders a billion-laughs manifest, listed by a
// kustomization and found in a plain folder: a clear error naming the
// file, in milliseconds, with bounded memory.
func TestAliasBomb(t *testing.T) {
	bomb := billionLaughs()
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"app/kustomization.yaml":     "resources:\n- lol.yaml\n",
		"app/lol.yaml":               bomb,
		"plain/lol.yaml":             bomb,
		"patched/kustomization.yaml": "resources:\n- cm.yaml\npatches:\n- path: lol.yaml\n",
		"patched/cm.yaml":            strings.Replace(cm, "name: x", "name: lol", 1),
		"patched/lol.yaml":           bomb,
	})
	for _, path := range []string{"app", "plain", "patched"} {
		t.Run(path, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := renderWithin(t, 30*time.Second, render.Options{Root: root, Path: path})
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d-byte bomb refused in %v, %.1f MiB allocated: %v", len(bomb), took, float64(alloc)/(1<<20), err)
			if !errors.Is(err, render.ErrTooLarge) || !strings.Contains(err.Error(), path+"/lol.yaml") ||
				!strings.Contains(err.Error(), "too many aliases") {
				t.Fatalf("err = %v, want a too-many-aliases error naming %s/lol.yaml", err, path)
			}
			if took > 2*time.Second || alloc > 64<<20 {
				t.Errorf("took %v and %d bytes, want milliseconds and a few MiB", took, alloc)
			}
		})
	}
	t.Run("self-referencing anchor", func(t *testing.T) {
		// kyaml's DeAnchor recursed on this until "fatal error: stack
		// overflow" killed the process: no recover can catch that.
		root := t.TempDir()
		writeTree(t, root, map[string]string{"kustomization.yaml": "resources:\n- cm.yaml\n", "cm.yaml": cm + "data: &a {k: *a}\n"})
		_, err := renderWithin(t, 10*time.Second, render.Options{Root: root})
		if !errors.Is(err, render.ErrTooLarge) || !strings.Contains(err.Error(), "cm.yaml: document 1: an anchor refers to itself") {
			t.Fatalf("err = %v, want a refusal naming cm.yaml", err)
		}
	})
	t.Run("aliases within the limit", func(t *testing.T) {
		root := t.TempDir()
		writeTree(t, root, map[string]string{"cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: &l {app: x}\n  annotations: *l\n"})
		objs, err := render.Render(t.Context(), render.Options{Root: root})
		if err != nil || len(objs) != 1 || objs[0].GetAnnotations()["app"] != "x" {
			t.Fatalf("render = %v, %v", objs, err)
		}
	})
}

// TestInputLimits: each file limit, and files that are not regular files,
// give an error naming the file.
func TestInputLimits(t *testing.T) {
	docs := strings.Repeat("---\n"+cm, 4)
	tests := []struct {
		name  string
		files map[string]string
		fifo  string // a FIFO at this path
		sock  string // a Unix socket at this path
		path  string
		lim   render.Limits
		want  error
		msg   string
	}{
		{name: "file over its size", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\n", "app/cm.yaml": cm + "data:\n  big: " + strings.Repeat("x", 2000) + "\n"},
			path: "app", lim: render.Limits{MaxFileBytes: 1024}, want: render.ErrTooLarge, msg: "app/cm.yaml: 2065 bytes, more than 1024"},
		{name: "kustomization over its size", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\n#" + strings.Repeat("x", 2000) + "\n", "app/cm.yaml": cm},
			path: "app", lim: render.Limits{MaxFileBytes: 1024}, want: render.ErrTooLarge, msg: "app/kustomization.yaml"},
		{name: "too many documents", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\n", "app/cm.yaml": docs},
			path: "app", lim: render.Limits{MaxDocuments: 3}, want: render.ErrTooLarge, msg: "app/cm.yaml: more than 3 YAML documents"},
		{name: "too many nodes", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\n", "app/cm.yaml": cm + "data:\n" + strings.Repeat("  k: v\n", 1)},
			path: "app", lim: render.Limits{MaxNodes: 10}, want: render.ErrTooLarge, msg: "app/cm.yaml: document 1: more than 10 YAML nodes"},
		{name: "patch over its size", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\npatches:\n- path: p.yaml\n", "app/cm.yaml": cm, "app/p.yaml": cm + "data:\n  a: " + strings.Repeat("y", 2000) + "\n"},
			path: "app", lim: render.Limits{MaxFileBytes: 1024}, want: render.ErrTooLarge, msg: "app/p.yaml"},
		{name: "generator file over its size", files: map[string]string{"app/kustomization.yaml": "configMapGenerator:\n- name: g\n  files:\n  - blob.bin\n", "app/blob.bin": strings.Repeat("z", 4096)},
			path: "app", lim: render.Limits{MaxFileBytes: 1024}, want: render.ErrTooLarge, msg: "app/blob.bin"},
		{name: "FIFO resource", files: map[string]string{"app/kustomization.yaml": "resources:\n- cm.yaml\n"}, fifo: "app/cm.yaml",
			path: "app", want: render.ErrNotRegular, msg: "app/cm.yaml: a FIFO"},
		{name: "FIFO kustomization", fifo: "app/kustomization.yaml", path: "app", want: render.ErrNotRegular, msg: "app/kustomization.yaml: a FIFO"},
		{name: "FIFO in a plain folder", files: map[string]string{"app/a.yaml": cm}, fifo: "app/b.yaml", path: "app", want: render.ErrNotRegular, msg: "app/b.yaml: a FIFO"},
		{name: "FIFO generator file", files: map[string]string{"app/kustomization.yaml": "configMapGenerator:\n- name: g\n  files:\n  - key\n"}, fifo: "app/key",
			path: "app", want: render.ErrNotRegular, msg: "app/key: a FIFO"},
		{name: "socket resource", files: map[string]string{"app/kustomization.yaml": "resources:\n- s.yaml\n"}, sock: "app/s.yaml",
			path: "app", want: render.ErrNotRegular, msg: "app/s.yaml: a socket"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tc.files)
			if tc.fifo != "" {
				p := filepath.Join(root, tc.fifo)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mkfifo(p, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if tc.sock != "" {
				l, err := net.Listen("unix", filepath.Join(root, tc.sock))
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
			}
			_, err := renderWithin(t, 10*time.Second, render.Options{Root: root, Path: tc.path, Limits: tc.lim})
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err = %v\nwant %v, containing %q", err, tc.want, tc.msg)
			}
		})
	}
}

// TestRemoteBasesHTTPSOnly: with remote bases allowed, anything but an
// explicit https:// URL is refused before any network is touched.
func TestRemoteBasesHTTPSOnly(t *testing.T) {
	for _, ref := range []string{
		"http://example.com/cm.yaml",
		"HTTP://example.com/cm.yaml",
		"git::http://example.com/repo.git//app",
		"git://example.com/repo.git",
		"ssh://git@example.com/repo.git",
		"git@github.com:acme/app.git",
		"github.com/acme/app//deploy?ref=v1",
	} {
		t.Run(ref, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, map[string]string{"kustomization.yaml": "resources:\n- " + ref + "\n"})
			_, err := render.Render(t.Context(), render.Options{Root: root, AllowRemoteBases: true})
			if !errors.Is(err, render.ErrNotAllowed) || !strings.Contains(err.Error(), "only https:// remotes") {
				t.Errorf("err = %v, want an only-https refusal", err)
			}
		})
	}
}

// TestRenderCancelled cancels a render in the middle of a build of 1,000
// objects in 100 files (about 2 s): it returns at once with the context's
// error, and the abandoned build stops at its next file read.
func TestRenderCancelled(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{}
	var res strings.Builder
	for i := range 100 {
		name := fmt.Sprintf("cm-%03d.yaml", i)
		res.WriteString("- " + name + "\n")
		var docs strings.Builder
		for j := range 10 {
			fmt.Fprintf(&docs, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%d-%d\ndata:\n  k: v\n", i, j)
		}
		files[name] = docs.String()
	}
	files["kustomization.yaml"] = "resources:\n" + res.String()
	writeTree(t, root, files)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := render.Render(ctx, render.Options{Root: root})
	took := time.Since(start)
	t.Logf("cancelled after 50 ms, returned after %v: %v", took, err)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context.DeadlineExceeded", err)
	}
	if took > 500*time.Millisecond {
		t.Errorf("returned after %v, want soon after the 50 ms deadline", took)
	}
}
