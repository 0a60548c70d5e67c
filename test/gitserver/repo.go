package gitserver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// Repo is a bare repository on the server plus a working clone that makes
// commits and pushes them to it (over the local transport, so pushes need no
// credentials and do not count against the HTTP or SSH servers).
type Repo struct {
	Name string

	srv     *Server
	mu      sync.Mutex
	work    *git.Repository
	workDir string
	branch  string
	when    time.Time
}

// signature is the author and committer of every commit the helpers make.
func signature(when time.Time) *object.Signature {
	return &object.Signature{Name: "refit test", Email: "test@refit.dev", When: when}
}

// CreateRepo creates an empty bare repository name (".git" is appended if
// missing) and a working clone on the server's default branch.
func (s *Server) CreateRepo(name string) (*Repo, error) {
	bare := s.RepoPath(name)
	if _, err := os.Stat(bare); err == nil {
		return nil, fmt.Errorf("repo %s: already exists", name)
	}
	b, err := git.PlainInit(bare, true)
	if err != nil {
		return nil, fmt.Errorf("repo %s: init bare: %w", name, err)
	}
	head := plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.NewBranchReferenceName(s.opts.DefaultBranch))
	if err := b.Storer.SetReference(head); err != nil {
		return nil, fmt.Errorf("repo %s: set HEAD: %w", name, err)
	}
	// Tests delete the default branch too, as a host's UI allows.
	cfg, err := b.Config()
	if err != nil {
		return nil, fmt.Errorf("repo %s: config: %w", name, err)
	}
	cfg.Raw.Section("receive").SetOption("denyDeleteCurrent", "ignore")
	if err := b.SetConfig(cfg); err != nil {
		return nil, fmt.Errorf("repo %s: config: %w", name, err)
	}
	workDir := filepath.Join(s.root, "work", repoDir(name))
	w, err := git.PlainInit(workDir, false)
	if err != nil {
		return nil, fmt.Errorf("repo %s: init clone: %w", name, err)
	}
	if err := w.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, plumbing.NewBranchReferenceName(s.opts.DefaultBranch))); err != nil {
		return nil, fmt.Errorf("repo %s: set clone HEAD: %w", name, err)
	}
	if _, err := w.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{bare}}); err != nil {
		return nil, fmt.Errorf("repo %s: add remote: %w", name, err)
	}
	// Commit times start in the past and advance one second a commit, so
	// history order does not depend on the clock's resolution.
	return &Repo{Name: name, srv: s, work: w, workDir: workDir, branch: s.opts.DefaultBranch,
		when: time.Now().Add(-time.Hour).Truncate(time.Second)}, nil
}

// HTTPURL, SSHURL and FileURL are the repository's URLs.
func (r *Repo) HTTPURL() string { return r.srv.HTTPURL(r.Name) }
func (r *Repo) SSHURL() string  { return r.srv.SSHURL(r.Name) }
func (r *Repo) FileURL() string { return r.srv.FileURL(r.Name) }

// Branch is the branch that Commit adds to.
func (r *Repo) Branch() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.branch
}

// Commit writes files (path → content, "/"-separated paths relative to the
// repository root), commits them on the current branch and force-pushes the
// branch. It returns the new commit's SHA.
func (r *Repo) Commit(files map[string]string, msg string) (string, error) {
	return r.commit(msg, func(wt *git.Worktree) error {
		for name, content := range files {
			p := filepath.Join(r.workDir, filepath.FromSlash(name))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
		// One add of everything: an add per file computes the worktree's
		// status each time, minutes for a monorepo of thousands of files.
		if err := wt.AddWithOptions(&git.AddOptions{All: true}); err != nil {
			return fmt.Errorf("add: %w", err)
		}
		return nil
	})
}

// Remove deletes paths, commits and pushes like Commit.
func (r *Repo) Remove(paths []string, msg string) (string, error) {
	return r.commit(msg, func(wt *git.Worktree) error {
		for _, name := range paths {
			if _, err := wt.Remove(name); err != nil {
				return fmt.Errorf("remove %s: %w", name, err)
			}
		}
		return nil
	})
}

func (r *Repo) commit(msg string, change func(*git.Worktree) error) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	wt, err := r.work.Worktree()
	if err != nil {
		return "", fmt.Errorf("repo %s: %w", r.Name, err)
	}
	if err := change(wt); err != nil {
		return "", fmt.Errorf("repo %s: %w", r.Name, err)
	}
	r.when = r.when.Add(time.Second)
	sig := signature(r.when)
	h, err := wt.Commit(msg, &git.CommitOptions{Author: sig, Committer: sig, AllowEmptyCommits: true})
	if err != nil {
		return "", fmt.Errorf("repo %s: commit: %w", r.Name, err)
	}
	ref := plumbing.NewBranchReferenceName(r.branch)
	if err := r.push(config.RefSpec("+" + ref + ":" + ref)); err != nil {
		return "", err
	}
	return h.String(), nil
}

// Checkout switches the working clone to branch, creating it at the current
// commit when it does not exist. Later commits go to that branch.
func (r *Repo) Checkout(branch string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	wt, err := r.work.Worktree()
	if err != nil {
		return fmt.Errorf("repo %s: %w", r.Name, err)
	}
	name := plumbing.NewBranchReferenceName(branch)
	_, err = r.work.Reference(name, false)
	create := errors.Is(err, plumbing.ErrReferenceNotFound)
	if err := wt.Checkout(&git.CheckoutOptions{Branch: name, Create: create, Keep: false}); err != nil {
		return fmt.Errorf("repo %s: checkout %s: %w", r.Name, branch, err)
	}
	r.branch = branch
	return nil
}

// Tag creates tag name at commit sha and pushes it: annotated when message
// is not empty, lightweight otherwise. An existing tag is moved.
func (r *Repo) Tag(name, sha, message string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ref := plumbing.NewTagReferenceName(name)
	if err := r.work.Storer.RemoveReference(ref); err != nil {
		return fmt.Errorf("repo %s: tag %s: %w", r.Name, name, err)
	}
	var opts *git.CreateTagOptions
	if message != "" {
		r.when = r.when.Add(time.Second)
		opts = &git.CreateTagOptions{Tagger: signature(r.when), Message: message}
	}
	if _, err := r.work.CreateTag(name, plumbing.NewHash(sha), opts); err != nil {
		return fmt.Errorf("repo %s: tag %s: %w", r.Name, name, err)
	}
	return r.push(config.RefSpec("+" + ref + ":" + ref))
}

// ResetBranch points branch at commit sha and force-pushes it, as a
// history rewrite on the Git host would.
func (r *Repo) ResetBranch(branch, sha string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ref := plumbing.NewBranchReferenceName(branch)
	h := plumbing.NewHash(sha)
	if branch == r.branch {
		wt, err := r.work.Worktree()
		if err != nil {
			return fmt.Errorf("repo %s: %w", r.Name, err)
		}
		if err := wt.Reset(&git.ResetOptions{Commit: h, Mode: git.HardReset}); err != nil {
			return fmt.Errorf("repo %s: reset %s: %w", r.Name, branch, err)
		}
	} else if err := r.work.Storer.SetReference(plumbing.NewHashReference(ref, h)); err != nil {
		return fmt.Errorf("repo %s: reset %s: %w", r.Name, branch, err)
	}
	return r.push(config.RefSpec("+" + ref + ":" + ref))
}

// DeleteRef deletes a full ref name (refs/heads/x, refs/tags/v1) on the
// server and in the working clone.
func (r *Repo) DeleteRef(ref string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.push(config.RefSpec(":" + ref)); err != nil {
		return err
	}
	if err := r.work.Storer.RemoveReference(plumbing.ReferenceName(ref)); err != nil {
		return fmt.Errorf("repo %s: delete %s: %w", r.Name, ref, err)
	}
	return nil
}

func (r *Repo) push(spec config.RefSpec) error {
	err := r.work.Push(&git.PushOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{spec}, Force: true})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("repo %s: push %s: %w", r.Name, spec, err)
	}
	return nil
}
