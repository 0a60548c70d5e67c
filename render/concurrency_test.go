package render

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

const testCM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"

// stuck starts a render whose build holds its share of the build lock
// and waits inside it until release is closed, as a slow build would.
func stuck(t *testing.T, ctx context.Context, opts Options) (inside <-chan struct{}, release chan struct{}, result <-chan error) {
	t.Helper()
	in, rel, res := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	opts.beforeBuild = func() {
		close(in)
		<-rel
	}
	go func() {
		_, err := Render(ctx, opts)
		res <- err
	}()
	select {
	case <-in:
	case <-time.After(10 * time.Second):
		t.Fatal("the first build never started")
	}
	return in, rel, res
}

// TestRenderDoesNotBlockOthers: while one app's build is stuck, another
// app renders; the stuck one returns as soon as its context ends.
func TestRenderDoesNotBlockOthers(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"a/cm.yaml": testCM, "b/cm.yaml": testCM})
	ctx, cancel := context.WithCancel(t.Context())
	_, release, result := stuck(t, ctx, Options{Root: root, Path: "a"})
	defer close(release)

	done := make(chan error, 1)
	go func() {
		_, err := Render(t.Context(), Options{Root: root, Path: "b"})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("render b: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("render b waited for render a's build")
	}

	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("render a = %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Error("render a did not return when its context was cancelled")
	}
}

// TestOpenAPIBuildRunsAlone: a build that sets kustomize's process-wide
// OpenAPI schema waits for the builds in progress (and can be cancelled
// while it waits); other builds run side by side.
func TestOpenAPIBuildRunsAlone(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"a/cm.yaml":                 testCM,
		"schema/kustomization.yaml": "openapi:\n  version: v1.21.2\nresources:\n- cm.yaml\n",
		"schema/cm.yaml":            testCM,
	})
	_, release, result := stuck(t, t.Context(), Options{Root: root, Path: "a"})

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if _, err := Render(ctx, Options{Root: root, Path: "schema"}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("openapi render beside a running build = %v, want to wait until its deadline", err)
	}
	close(release)
	if err := <-result; err != nil {
		t.Fatalf("render a: %v", err)
	}
	if _, err := Render(t.Context(), Options{Root: root, Path: "schema"}); err != nil {
		t.Fatalf("openapi render alone: %v", err)
	}
}

// TestConcurrentRenders renders several apps at once, one of them with an
// OpenAPI schema, many times: run with -race it checks that the builds
// that share the lock share no kustomize state.
func TestConcurrentRenders(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{
		"base/kustomization.yaml":   "resources:\n- cm.yaml\n- dep.yaml\n",
		"base/cm.yaml":              testCM,
		"base/dep.yaml":             "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: nginx\n",
		"a/kustomization.yaml":      "namePrefix: a-\nresources:\n- ../base\nimages:\n- name: nginx\n  newTag: '1.27'\n",
		"b/kustomization.yaml":      "namespace: b\nresources:\n- ../base\npatches:\n- patch: '[{\"op\": \"add\", \"path\": \"/data\", \"value\": {\"k\": \"v\"}}]'\n  target: {kind: ConfigMap}\n",
		"schema/kustomization.yaml": "openapi:\n  version: v1.21.2\nresources:\n- ../base\n",
		"plain/cm.yaml":             testCM,
	})
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 5 {
		for _, p := range []string{"a", "b", "schema", "plain"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := Render(t.Context(), Options{Root: root, Path: p}); err != nil {
					errs <- err
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
