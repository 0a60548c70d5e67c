package source_test

import (
	"errors"
	"testing"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestFilesTellWhatChanged checks a commit's listing against the next
// commit's: a changed file and the folders above it get new hashes, the
// rest keep theirs; a missing path is "", one through a symlink unknown.
func TestFilesTellWhatChanged(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	repo.Commit(map[string]string{"apps/a/cm.yaml": "a: 1\n", "apps/b/cm.yaml": "b: 1\n", "base/k.yaml": "k: 1\n"}, "1")
	p := newPoller(t, repo.HTTPURL(), source.Ref{Branch: "main"}, basicAuth(srv))
	one := poll(t, p)
	repo.Commit(map[string]string{"apps/a/cm.yaml": "a: 2\n"}, "2")
	two := poll(t, p)
	lookup := func(f *source.Files, path string) string {
		t.Helper()
		h, err := f.Lookup(path)
		if err != nil {
			t.Fatalf("lookup %s: %v", path, err)
		}
		return h
	}
	for _, tc := range []struct {
		path string
		same bool
	}{
		{".", false}, {"apps", false}, {"apps/a", false}, {"apps/a/cm.yaml", false},
		{"apps/b", true}, {"apps/b/cm.yaml", true}, {"base", true}, {"base/k.yaml", true}, {"apps/c", true},
	} {
		if got := lookup(one.Files, tc.path) == lookup(two.Files, tc.path); got != tc.same {
			t.Errorf("%s: same in both commits = %v, want %v", tc.path, got, tc.same)
		}
	}
	if h := lookup(two.Files, "apps/nothing/here.yaml"); h != "" {
		t.Errorf("a missing path has hash %q, want \"\"", h)
	}
	if h := lookup(two.Files, "apps/a/cm.yaml"); len(h) != 40 {
		t.Errorf("a file's hash = %q, want a SHA-1", h)
	}
	if _, err := two.Files.Lookup("../outside"); !errors.Is(err, source.ErrUnknownPath) {
		t.Errorf("a path outside the tree: %v, want ErrUnknownPath", err)
	}
}
