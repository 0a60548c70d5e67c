package source

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
)

const (
	metaSuffix = ".json"
	tmpPrefix  = ".tmp-"
)

// fetch brings the target commit into a fresh in-memory repository and
// checks its tree out under the cache. Each fetch starts empty: a depth-1
// fetch of one ref costs the same, and no on-disk Git state can go stale.
func (p *Poller) fetch(ctx context.Context, tgt target) (Revision, error) {
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return Revision{}, p.fail("fetch", err)
	}
	rem, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{p.ep.url}})
	if err != nil {
		return Revision{}, p.fail("fetch", err)
	}
	opts := &git.FetchOptions{Auth: p.auth, Tags: git.NoTags}
	switch {
	case tgt.name != "" && tgt.shallow:
		opts.RefSpecs, opts.Depth = []config.RefSpec{refSpec(tgt.name)}, 1
	case tgt.name != "":
		opts.RefSpecs = []config.RefSpec{refSpec(tgt.name)}
	default:
		// A pinned commit at no ref's tip: the whole history of every branch
		// and tag, since servers refuse to send unadvertised commits.
		opts.RefSpecs = []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}
	}
	_, err = network(ctx, p.opts.Timeout, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, rem.FetchContext(ctx, opts)
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return Revision{}, p.fail("fetch", err)
	}
	commit, err := fetchedCommit(repo, tgt, p.opts.Ref.Commit != "")
	if err != nil {
		return Revision{}, p.fail("fetch", err)
	}
	rev := Revision{
		URL:     p.ep.safe,
		Ref:     tgt.name.String(),
		Commit:  commit.Hash.String(),
		Author:  commit.Author.Name + " <" + commit.Author.Email + ">",
		Message: commit.Message,
		Time:    commit.Author.When,
		Fetched: true,
	}
	if rev.Dir, err = p.checkout(commit, rev); err != nil {
		return Revision{}, p.fail("checkout", err)
	}
	return rev, nil
}

func refSpec(name plumbing.ReferenceName) config.RefSpec {
	return config.RefSpec("+" + name + ":" + name)
}

// fetchedCommit finds the commit to check out: the pinned one, or the one
// the fetched ref points at now (which may be newer than the listing if the
// ref moved in between: the fetch is what was really received).
func fetchedCommit(repo *git.Repository, tgt target, pinned bool) (*object.Commit, error) {
	h := tgt.commit
	if !pinned {
		ref, err := repo.Reference(tgt.name, true)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tgt.name, ErrNotFound)
		}
		h = ref.Hash()
		if tag, err := repo.TagObject(h); err == nil {
			c, err := tag.Commit()
			if err != nil {
				return nil, fmt.Errorf("tag %s does not point at a commit: %w", tgt.name.Short(), ErrNotFound)
			}
			return c, nil
		}
	}
	c, err := repo.CommitObject(h)
	if err != nil {
		return nil, fmt.Errorf("commit %s: %w", h, ErrNotFound)
	}
	return c, nil
}

// checkout writes the commit's tree into a temporary directory and renames
// it into place, so a crash never leaves a partial tree that looks cached.
func (p *Poller) checkout(commit *object.Commit, rev Revision) (string, error) {
	tree, err := commit.Tree()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(p.dir, tmpPrefix)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	err = tree.Files().ForEach(func(f *object.File) error { return writeFile(tmp, f) })
	if err != nil {
		return "", err
	}
	final := filepath.Join(p.dir, rev.Commit)
	if err := os.RemoveAll(final); err != nil { // a tree without metadata: incomplete
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	meta, err := json.Marshal(rev)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(final+metaSuffix, meta, 0o644); err != nil {
		return "", err
	}
	return final, nil
}

func writeFile(root string, f *object.File) error {
	// Git refuses such names, but a crafted tree can hold anything.
	name := filepath.FromSlash(f.Name)
	if filepath.IsAbs(name) || !filepath.IsLocal(name) {
		return fmt.Errorf("tree entry %q escapes the checkout", f.Name)
	}
	for _, part := range strings.Split(f.Name, "/") {
		if strings.EqualFold(part, ".git") {
			return fmt.Errorf("tree entry %q is inside .git", f.Name)
		}
	}
	path := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if f.Mode == filemode.Symlink {
		target, err := f.Contents()
		if err != nil {
			return err
		}
		// Kept as a link, as git would: render refuses links leaving the tree.
		return os.Symlink(target, path)
	}
	perm := os.FileMode(0o644)
	if f.Mode == filemode.Executable {
		perm = 0o755
	}
	r, err := f.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// cached returns the checked-out revision for commit, if complete.
func (p *Poller) cached(commit string) (Revision, bool) {
	dir := filepath.Join(p.dir, commit)
	data, err := os.ReadFile(dir + metaSuffix)
	if err != nil {
		return Revision{}, false
	}
	var rev Revision
	if json.Unmarshal(data, &rev) != nil || rev.Commit != commit {
		return Revision{}, false
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return Revision{}, false
	}
	// The metadata's mtime orders trees for pruning: mark this one as used.
	now := time.Now()
	_ = os.Chtimes(dir+metaSuffix, now, now)
	rev.Dir = dir
	return rev, true
}

// prune keeps the Keep most recently used trees (current among them) and
// removes the rest, with any temporary directory a crash left behind.
func (p *Poller) prune(current string) error {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return err
	}
	type tree struct {
		commit string
		used   time.Time
	}
	var trees []tree
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if err := os.RemoveAll(filepath.Join(p.dir, name)); err != nil {
				return err
			}
		case strings.HasSuffix(name, metaSuffix):
			info, err := e.Info()
			if err != nil {
				return err
			}
			trees = append(trees, tree{strings.TrimSuffix(name, metaSuffix), info.ModTime()})
		}
	}
	sort.Slice(trees, func(i, j int) bool {
		if trees[i].commit == current || trees[j].commit == current {
			return trees[i].commit == current
		}
		return trees[i].used.After(trees[j].used)
	})
	for i := p.opts.Keep; i < len(trees); i++ {
		old := filepath.Join(p.dir, trees[i].commit)
		if err := os.Remove(old + metaSuffix); err != nil {
			return err
		}
		if err := os.RemoveAll(old); err != nil {
			return err
		}
	}
	return nil
}
