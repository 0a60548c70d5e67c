package source_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

// wantRev checks a poll's commit and whether it fetched.
func wantRev(t *testing.T, p *source.Poller, commit string, fetched bool) source.Revision {
	t.Helper()
	rev := poll(t, p)
	if rev.Commit != commit || rev.Fetched != fetched {
		t.Fatalf("poll = commit %s fetched %v, want %s fetched %v", rev.Commit, rev.Fetched, commit, fetched)
	}
	return rev
}

func TestBranch(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "app")
	a := repo.Commit(map[string]string{"app.yaml": "v: a\n"}, "a")
	p := newPoller(t, repo.HTTPURL(), source.Ref{Branch: "main"}, basicAuth(srv))

	rev := wantRev(t, p, a, true)
	t.Run("unchanged ref lists but does not fetch", func(t *testing.T) {
		again := wantRev(t, p, a, false)
		if again.Dir != rev.Dir {
			t.Errorf("dir moved: %s → %s", rev.Dir, again.Dir)
		}
		if st := p.Stats(); st.Fetches != 1 || st.Lists != 2 || st.CacheHits != 1 {
			t.Errorf("stats = %+v, want 1 fetch, 2 lists, 1 cache hit", st)
		}
	})
	b := repo.Commit(map[string]string{"app.yaml": "v: b\n"}, "b")
	t.Run("new commit is fetched", func(t *testing.T) {
		rev := wantRev(t, p, b, true)
		if got := readFile(t, rev.Dir, "app.yaml"); got != "v: b\n" {
			t.Errorf("content = %q", got)
		}
	})
	t.Run("force-push back to a cached commit needs no fetch", func(t *testing.T) {
		repo.ResetBranch("main", a)
		wantRev(t, p, a, false)
	})
	t.Run("force-push to a rewritten history is fetched", func(t *testing.T) {
		c := repo.Commit(map[string]string{"app.yaml": "v: c\n"}, "c, replacing b")
		rev := wantRev(t, p, c, true)
		if got := readFile(t, rev.Dir, "app.yaml"); got != "v: c\n" {
			t.Errorf("content = %q", got)
		}
	})
	t.Run("a restarted poller reuses the cache", func(t *testing.T) {
		opts := source.DefaultOptions()
		opts.URL, opts.Ref, opts.Auth = repo.HTTPURL(), source.Ref{Branch: "main"}, basicAuth(srv)
		opts.CacheDir = filepath.Dir(filepath.Dir(rev.Dir))
		p2, err := source.NewPoller(opts)
		if err != nil {
			t.Fatal(err)
		}
		wantRev(t, p2, poll(t, p).Commit, false)
	})
	t.Run("deleted branch", func(t *testing.T) {
		repo.Checkout("other")
		repo.DeleteRef("refs/heads/main")
		if err := pollErr(t, p); !errors.Is(err, source.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

func TestTagsAndSemver(t *testing.T) {
	srv := gitserver.New(t, gitserver.Options{})
	repo := srv.NewRepo(t, "app")
	c1 := repo.Commit(map[string]string{"v": "1.0.0"}, "one")
	repo.Tag("v1.0.0", c1, "release 1.0.0")
	c2 := repo.Commit(map[string]string{"v": "1.1.0"}, "two")
	repo.Tag("v1.1.0", c2, "")
	c3 := repo.Commit(map[string]string{"v": "2.0.0"}, "three")
	repo.Tag("v2.0.0", c3, "release 2.0.0")

	t.Run("annotated tag", func(t *testing.T) {
		p := newPoller(t, repo.HTTPURL(), source.Ref{Tag: "v1.0.0"}, source.Auth{})
		rev := wantRev(t, p, c1, true)
		if rev.Ref != "refs/tags/v1.0.0" || readFile(t, rev.Dir, "v") != "1.0.0" {
			t.Errorf("rev = %+v", rev)
		}
		wantRev(t, p, c1, false)
	})
	t.Run("lightweight tag over ssh", func(t *testing.T) {
		p := newPoller(t, repo.SSHURL(), source.Ref{Tag: "v1.1.0"}, sshAuth(srv))
		wantRev(t, p, c2, true)
	})
	t.Run("semver follows the highest matching tag", func(t *testing.T) {
		p := newPoller(t, repo.HTTPURL(), source.Ref{SemVer: "^1.0"}, source.Auth{})
		rev := wantRev(t, p, c2, true)
		if rev.Ref != "refs/tags/v1.1.0" {
			t.Errorf("ref = %s", rev.Ref)
		}
		c4 := repo.Commit(map[string]string{"v": "1.2.0"}, "four")
		repo.Tag("v1.2.0", c4, "release 1.2.0")
		wantRev(t, p, c4, true)
		repo.Tag("v3.0.0", repo.Commit(map[string]string{"v": "3"}, "five"), "")
		wantRev(t, p, c4, false)
		repo.DeleteRef("refs/tags/v1.2.0")
		wantRev(t, p, c2, false) // still cached
	})
	t.Run("moved tag", func(t *testing.T) {
		p := newPoller(t, repo.FileURL(), source.Ref{Tag: "v1.0.0"}, source.Auth{})
		wantRev(t, p, c1, true)
		repo.Tag("v1.0.0", c3, "moved")
		wantRev(t, p, c3, true)
	})
	t.Run("deleted tag", func(t *testing.T) {
		p := newPoller(t, repo.FileURL(), source.Ref{Tag: "v2.0.0"}, source.Auth{})
		wantRev(t, p, c3, true)
		repo.DeleteRef("refs/tags/v2.0.0")
		if err := pollErr(t, p); !errors.Is(err, source.ErrNotFound) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
	})
}

func TestPinnedCommit(t *testing.T) {
	srv := gitserver.New(t, gitserver.Options{})
	repo := srv.NewRepo(t, "app")
	old := repo.Commit(map[string]string{"v": "old"}, "old")
	tip := repo.Commit(map[string]string{"v": "tip"}, "tip")
	tests := []struct {
		name string
		ref  source.Ref
		want string
	}{
		{"at a branch tip", source.Ref{Commit: tip}, tip},
		{"in history", source.Ref{Commit: old}, old},
		{"in a branch's history", source.Ref{Commit: old, Branch: "main"}, old},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPoller(t, repo.HTTPURL(), tc.ref, source.Auth{})
			rev := wantRev(t, p, tc.want, true)
			if got := readFile(t, rev.Dir, "v"); (tc.want == old) != (got == "old") {
				t.Errorf("content = %q", got)
			}
			// Pinned and checked out: no network at all.
			wantRev(t, p, tc.want, false)
			if st := p.Stats(); st.Lists != 1 || st.Fetches != 1 {
				t.Errorf("stats = %+v, want 1 list, 1 fetch", st)
			}
		})
	}
}

func TestCheckout(t *testing.T) {
	srv := gitserver.New(t, gitserver.Options{})
	repo := srv.NewRepo(t, "app")
	var shas []string
	for _, v := range []string{"1", "2", "3", "4"} {
		shas = append(shas, repo.Commit(map[string]string{"a/b/c.yaml": v, "run.sh": "#!/bin/sh\n"}, v))
	}
	opts := source.DefaultOptions()
	opts.URL, opts.CacheDir, opts.Keep = repo.FileURL(), t.TempDir(), 2
	p, err := source.NewPoller(opts)
	if err != nil {
		t.Fatal(err)
	}
	rev := poll(t, p)
	for _, sha := range shas[:3] {
		repo.ResetBranch("main", sha)
		rev = poll(t, p)
	}
	entries, err := os.ReadDir(filepath.Dir(rev.Dir))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	if len(dirs) != 2 {
		t.Errorf("cache holds %v, want the 2 newest trees", dirs)
	}
	if got := readFile(t, rev.Dir, "a/b/c.yaml"); got != "3" {
		t.Errorf("content = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(rev.Dir, "run.sh")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("run.sh mode = %v, %v", fi.Mode(), err)
	}
}
