package source_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/refit-gitops/refit/source"
)

// TestFileRepo tracks a plain (non-bare) repository on disk through a
// file:// URL, and checks executable bits and symlinks survive checkout
// (a link leaving the checkout is refused: TestHostileTrees).
func TestFileRepo(t *testing.T) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "base"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "base", "cm.yaml"), []byte("kind: ConfigMap\n"), 0o644))
	must(os.Symlink("base", filepath.Join(dir, "link")))
	wt, err := repo.Worktree()
	must(err)
	must(wt.AddWithOptions(&git.AddOptions{All: true}))
	sig := &object.Signature{Name: "t", Email: "t@example.com", When: time.Now()}
	h, err := wt.Commit("files", &git.CommitOptions{Author: sig})
	must(err)

	p := newPoller(t, "file://"+dir, source.Ref{}, source.Auth{})
	rev := poll(t, p)
	if rev.Commit != h.String() {
		t.Fatalf("commit = %s, want %s", rev.Commit, h)
	}
	if fi, err := os.Stat(filepath.Join(rev.Dir, "run.sh")); err != nil || fi.Mode().Perm()&0o100 == 0 {
		t.Errorf("run.sh not executable: %v %v", fi.Mode(), err)
	}
	// Links inside the tree are kept as links.
	for link, want := range map[string]string{"link": filepath.Join(rev.Dir, "base")} {
		got, err := filepath.EvalSymlinks(filepath.Join(rev.Dir, link))
		if err != nil || got != want {
			t.Errorf("%s → %q (%v), want a symlink to %q", link, got, err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(rev.Dir, ".git")); !os.IsNotExist(err) {
		t.Errorf("checkout holds .git: %v", err)
	}
}
