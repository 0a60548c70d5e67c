package gitea

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// workRepo is the working clone Commit writes to.
type workRepo struct {
	mu   sync.Mutex
	repo *git.Repository
	dir  string
	when time.Time
}

// Commit writes files (path → content, "/"-separated, relative to the
// repository root) into a working clone of repo, commits them on main and
// pushes over HTTP with the admin's token, the way a developer would. It
// returns the new commit's SHA.
func (s *Server) Commit(ctx context.Context, repo string, files map[string]string, msg string) (string, error) {
	w, err := s.workRepo(repo)
	if err != nil {
		return "", fmt.Errorf("gitea repo %s: %w", repo, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	wt, err := w.repo.Worktree()
	if err != nil {
		return "", fmt.Errorf("gitea repo %s: %w", repo, err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join(w.dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", fmt.Errorf("gitea repo %s: %w", repo, err)
		}
		if err := os.WriteFile(p, []byte(files[name]), 0o644); err != nil {
			return "", fmt.Errorf("gitea repo %s: %w", repo, err)
		}
		if _, err := wt.Add(name); err != nil {
			return "", fmt.Errorf("gitea repo %s: add %s: %w", repo, name, err)
		}
	}
	// Commit times advance one second a commit, so history order does not
	// depend on the clock's resolution.
	w.when = w.when.Add(time.Second)
	sig := &object.Signature{Name: "refit test", Email: "test@refit.test", When: w.when}
	hash, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true})
	if err != nil {
		return "", fmt.Errorf("gitea repo %s: commit: %w", repo, err)
	}
	err = w.repo.PushContext(ctx, &git.PushOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{"refs/heads/main:refs/heads/main"},
		Auth:       &githttp.BasicAuth{Username: s.admin, Password: s.token},
	})
	if err != nil {
		return "", fmt.Errorf("gitea repo %s: push %s: %w", repo, hash, err)
	}
	return hash.String(), nil
}

// workRepo returns the working clone of repo, making it on first use: a new
// repository on main whose origin is the server, which suits the empty
// repositories CreateRepo makes.
func (s *Server) workRepo(repo string) (*workRepo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w, ok := s.repos[repo]; ok {
		return w, nil
	}
	dir := filepath.Join(s.dir, "clones", repo)
	r, err := git.PlainInit(dir, false)
	if err != nil {
		return nil, fmt.Errorf("init clone: %w", err)
	}
	if err := r.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.NewBranchReferenceName("main"))); err != nil {
		return nil, fmt.Errorf("init clone: %w", err)
	}
	if _, err := r.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{s.RepoURL(repo)}}); err != nil {
		return nil, fmt.Errorf("init clone: %w", err)
	}
	w := &workRepo{repo: r, dir: dir, when: time.Now().Add(-time.Hour).Truncate(time.Second)}
	s.repos[repo] = w
	return w, nil
}
