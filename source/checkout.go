package source

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5/osfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/storage/filesystem"
)

const (
	metaSuffix = ".json"
	tmpPrefix  = ".tmp-"
)

// largeObject is the size above which go-git streams a blob from the pack
// on disk instead of inflating it into memory.
const largeObject = 1 << 20

// fetch brings the target commit into a fresh repository on disk, checks
// its tree out under the cache and removes the repository. Each fetch
// starts empty: a depth-1 fetch of one ref costs the same, and no Git
// state can go stale. The repository lives on disk, not in memory, so a
// small pack of a huge blob costs disk (bounded by CheckoutLimits), not RAM.
func (p *Poller) fetch(ctx context.Context, tgt target) (Revision, error) {
	gitDir, err := os.MkdirTemp(p.dir, tmpPrefix+"git-")
	if err != nil {
		return Revision{}, p.fail("fetch", err)
	}
	defer os.RemoveAll(gitDir)
	repo, err := p.fetchRepo(ctx, tgt, gitDir, p.checkoutLimits())
	if errors.Is(err, ErrTreeRefused) {
		// The commit's fault, like an unverified one: say which commit.
		return Revision{URL: p.ep.safe, Ref: tgt.name.String(), Commit: tgt.commit.String(), Fetched: true}, p.fail("fetch", err)
	}
	if err != nil {
		return Revision{}, p.fail("fetch", err)
	}
	defer repo.Storer.(io.Closer).Close()
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
	if rev.Signer, err = p.verify(commit); err != nil {
		return rev, err
	}
	if rev.Dir, err = p.checkout(repo.Storer, commit, rev); err != nil {
		if errors.Is(err, ErrTreeRefused) {
			return rev, p.fail("checkout", err) // without Dir, as for ErrUnverified
		}
		return Revision{}, p.fail("checkout", err)
	}
	rev.Files = &Files{file: rev.Dir + filesSuffix}
	return rev, nil
}

// fetchRepo fetches tgt into a repository stored in gitDir. A commit at a
// ref's tip comes through that ref at depth 1. A pinned commit deeper in
// history is asked for by its SHA at depth 1 first, which servers allow
// when they advertise allow-reachable-sha1-in-want (GitHub, GitLab, Gitea
// do); only a server that refuses gets the full history of the branch, or
// of every branch and tag, since it sends no unadvertised commit otherwise.
func (p *Poller) fetchRepo(ctx context.Context, tgt target, gitDir string, lim CheckoutLimits) (*git.Repository, error) {
	st := guardedStorage{
		Storage: filesystem.NewStorageWithOptions(osfs.New(gitDir), cache.NewObjectLRUDefault(),
			// KeepDescriptors: one open pack for the whole checkout, not
			// one open and buffer per object read (fetch closes it).
			filesystem.Options{ExclusiveAccess: true, KeepDescriptors: true, LargeObjectThreshold: largeObject}),
		dir:       gitDir,
		maxObject: lim.withDefaults().MaxFileBytes,
	}
	repo, err := git.Init(st, nil)
	if err != nil {
		return nil, err
	}
	rem, err := repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{p.ep.url}})
	if err != nil {
		return nil, err
	}
	var tries []*git.FetchOptions
	one := func(depth int, specs ...config.RefSpec) {
		tries = append(tries, &git.FetchOptions{Auth: p.auth, Tags: git.NoTags, RefSpecs: specs, Depth: depth})
	}
	switch {
	case tgt.name != "" && tgt.shallow:
		one(1, refSpec(tgt.name))
	case tgt.name != "":
		one(1, config.RefSpec(tgt.commit.String()+":"+pinnedRef))
		one(0, refSpec(tgt.name))
	default:
		one(1, config.RefSpec(tgt.commit.String()+":"+pinnedRef))
		one(0, "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
	}
	for i, opts := range tries {
		_, err = network(ctx, p.opts.Timeout, func(ctx context.Context) (struct{}, error) {
			return struct{}{}, rem.FetchContext(ctx, opts)
		})
		if err == nil || errors.Is(err, git.NoErrAlreadyUpToDate) {
			return repo, nil
		}
		if ctx.Err() != nil || i == len(tries)-1 {
			break
		}
	}
	return nil, err
}

// pinnedRef is where a commit fetched by its SHA is kept while checked out.
const pinnedRef = "refs/heads/refit-pinned"

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
func (p *Poller) checkout(s storer.EncodedObjectStorer, commit *object.Commit, rev Revision) (string, error) {
	tree, err := commit.Tree()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(p.dir, tmpPrefix)
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if err := writeTree(s, tree, tmp, p.checkoutLimits()); err != nil {
		return "", err
	}
	final := filepath.Join(p.dir, rev.Commit)
	if err := os.RemoveAll(final); err != nil { // a tree without metadata: incomplete
		return "", err
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", err
	}
	// The listing goes before the metadata, which marks the tree complete.
	if err := writeFiles(s, tree, final+filesSuffix); err != nil {
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

// checkoutLimits are the limits this Poller checks out with.
func (p *Poller) checkoutLimits() CheckoutLimits {
	return p.opts.Checkout.withDefaults()
}

// entry is one thing a checkout writes, path slash-separated.
type entry struct {
	path string
	mode filemode.FileMode
	hash plumbing.Hash
	size int64
}

// writeTree checks the whole tree first (names, duplicates, links,
// limits) reading only tree objects, blob headers and link targets, and
// writes nothing unless all of it passes. The writes then go through an
// os.Root: even a check this code got wrong cannot write outside dir.
func writeTree(s storer.EncodedObjectStorer, tree *object.Tree, dir string, lim CheckoutLimits) error {
	pl := &planner{s: s, lim: lim.withDefaults(), links: map[string]string{}}
	if err := pl.walk(tree, ""); err != nil {
		return err
	}
	for _, e := range pl.entries {
		if e.mode != filemode.Symlink {
			continue
		}
		leaves, err := linkLeaves(e.path, pl.links)
		if err != nil {
			return err
		}
		if leaves {
			return fmt.Errorf("%q is a symlink to %q, which leads outside the checkout: %w", e.path, pl.links[e.path], ErrTreeRefused)
		}
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	buf := make([]byte, 32<<10)
	for _, e := range pl.entries {
		if err := writeEntry(s, root, e, pl.links, pl.lim, buf); err != nil {
			return err
		}
	}
	return nil
}

// planner walks a tree into the list of entries to write.
type planner struct {
	s       storer.EncodedObjectStorer
	lim     CheckoutLimits
	entries []entry
	links   map[string]string
	total   int64
}

func (pl *planner) walk(tree *object.Tree, dir string) error {
	seen := make(map[string]bool, len(tree.Entries))
	for _, te := range tree.Entries {
		if err := checkName(dir, te.Name); err != nil {
			return err
		}
		p := path.Join(dir, te.Name)
		if seen[te.Name] {
			// Written in turn, a link and a directory of one name would
			// let the second write go through the first.
			return fmt.Errorf("%q: two entries of one tree have this name: %w", p, ErrTreeRefused)
		}
		seen[te.Name] = true
		if te.Mode == filemode.Submodule {
			continue // a commit of another repository: not fetched, as git clone without --recursive
		}
		if len(pl.entries) >= pl.lim.MaxEntries {
			return fmt.Errorf("%q: more than %d files, directories and links: %w", p, pl.lim.MaxEntries, ErrTreeRefused)
		}
		e := entry{path: p, mode: te.Mode, hash: te.Hash}
		switch te.Mode {
		case filemode.Dir:
			pl.entries = append(pl.entries, e)
			sub, err := object.GetTree(pl.s, te.Hash)
			if err != nil {
				return fmt.Errorf("%q: %w", p, err)
			}
			if err := pl.walk(sub, p); err != nil {
				return err
			}
			continue
		case filemode.Regular, filemode.Deprecated, filemode.Executable, filemode.Symlink:
		default:
			return fmt.Errorf("%q: unknown file mode %o: %w", p, uint32(te.Mode), ErrTreeRefused)
		}
		obj, err := pl.s.EncodedObject(plumbing.BlobObject, te.Hash)
		if err != nil {
			return fmt.Errorf("%q: %w", p, err)
		}
		e.size = obj.Size()
		if te.Mode == filemode.Symlink {
			if err := pl.link(e, obj); err != nil {
				return err
			}
			pl.entries = append(pl.entries, e)
			continue
		}
		if e.size > pl.lim.MaxFileBytes {
			return fmt.Errorf("%q: %d bytes, more than the limit of %d bytes per file: %w", p, e.size, pl.lim.MaxFileBytes, ErrTreeRefused)
		}
		if pl.total += e.size; pl.total > pl.lim.MaxTreeBytes {
			return fmt.Errorf("%q: the tree holds more than the limit of %d bytes: %w", p, pl.lim.MaxTreeBytes, ErrTreeRefused)
		}
		pl.entries = append(pl.entries, e)
	}
	return nil
}

func (pl *planner) link(e entry, obj plumbing.EncodedObject) error {
	if e.size > maxLinkTarget {
		return fmt.Errorf("%q: symlink target of %d bytes: %w", e.path, e.size, ErrTreeRefused)
	}
	r, err := obj.Reader()
	if err != nil {
		return fmt.Errorf("%q: %w", e.path, err)
	}
	defer r.Close()
	target, err := io.ReadAll(io.LimitReader(r, maxLinkTarget+1))
	if err != nil {
		return fmt.Errorf("%q: %w", e.path, err)
	}
	if len(target) == 0 || bytes.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("%q: symlink with an empty target or a NUL byte: %w", e.path, ErrTreeRefused)
	}
	pl.links[e.path] = string(target)
	return nil
}

// writeEntry writes one checked entry, streaming a file's blob from the
// pack to the file through buf (one buffer for the whole checkout).
func writeEntry(s storer.EncodedObjectStorer, root *os.Root, e entry, links map[string]string, lim CheckoutLimits, buf []byte) error {
	name := filepath.FromSlash(e.path)
	switch e.mode {
	case filemode.Dir:
		return root.Mkdir(name, 0o755)
	case filemode.Symlink:
		// Kept as a link, as git would; it was checked to stay inside.
		return root.Symlink(links[e.path], name)
	}
	perm := os.FileMode(0o644)
	if e.mode == filemode.Executable {
		perm = 0o755
	}
	obj, err := s.EncodedObject(plumbing.BlobObject, e.hash)
	if err != nil {
		return fmt.Errorf("%q: %w", e.path, err)
	}
	r, err := obj.Reader()
	if err != nil {
		return fmt.Errorf("%q: %w", e.path, err)
	}
	defer r.Close()
	var src io.Reader = r
	if e.size < lfsPointerMax {
		head, err := io.ReadAll(io.LimitReader(r, lfsPointerMax))
		if err != nil {
			return fmt.Errorf("%q: %w", e.path, err)
		}
		// Skipping the file, or writing the pointer as if it were the
		// content, would make a render drop that file's objects (and a
		// prune delete them): refuse, naming the file.
		if isLFSPointer(head) {
			return fmt.Errorf("%q is a Git LFS pointer; refit does not fetch LFS content (commit the file itself): %w", e.path, ErrTreeRefused)
		}
		src = io.MultiReader(bytes.NewReader(head), r)
	}
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	// The blob's header gave its size; a pack that lies gets no further.
	// The anonymous struct hides os.File's ReadFrom, which would allocate
	// a buffer per file.
	n, err := io.CopyBuffer(struct{ io.Writer }{out}, io.LimitReader(src, lim.MaxFileBytes+1), buf)
	if err == nil && n > lim.MaxFileBytes {
		err = fmt.Errorf("%q: more than the limit of %d bytes per file: %w", e.path, lim.MaxFileBytes, ErrTreeRefused)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
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
	rev.Files = &Files{file: dir + filesSuffix}
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
		if err := os.RemoveAll(old + filesSuffix); err != nil {
			return err
		}
		if err := os.RemoveAll(old); err != nil {
			return err
		}
	}
	return nil
}
