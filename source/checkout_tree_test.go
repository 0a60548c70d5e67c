package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
)

// node is one entry of a crafted tree. The tree is encoded by hand, in the
// given order, so it can hold what Git would never write: duplicate names,
// "..", slashes, a link and a directory of one name.
type node struct {
	name     string
	mode     filemode.FileMode
	content  string // a file's content or a link's target
	children []node
}

func file(name, content string) node {
	return node{name: name, mode: filemode.Regular, content: content}
}
func link(name, target string) node { return node{name: name, mode: filemode.Symlink, content: target} }
func dir(name string, children ...node) node {
	return node{name: name, mode: filemode.Dir, children: children}
}

func storeBlob(t testing.TB, s storer.EncodedObjectStorer, content []byte) plumbing.Hash {
	t.Helper()
	o := s.NewEncodedObject()
	o.SetType(plumbing.BlobObject)
	w, err := o.Writer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(content); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := s.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func storeTree(t testing.TB, s storer.EncodedObjectStorer, nodes []node) plumbing.Hash {
	t.Helper()
	var raw bytes.Buffer
	for _, n := range nodes {
		var h plumbing.Hash
		switch n.mode {
		case filemode.Dir:
			h = storeTree(t, s, n.children)
		case filemode.Submodule:
			h = plumbing.NewHash(n.content)
		default:
			h = storeBlob(t, s, []byte(n.content))
		}
		fmt.Fprintf(&raw, "%o %s\x00", uint32(n.mode), n.name)
		raw.Write(h[:])
	}
	o := s.NewEncodedObject()
	o.SetType(plumbing.TreeObject)
	w, err := o.Writer()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	h, err := s.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// craftRepo makes a bare repository on disk whose branch main holds one
// commit of the given tree, and returns its file:// URL.
func craftRepo(t testing.TB, nodes []node) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo.git")
	repo, err := git.PlainInit(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	commitOn(t, repo, storeTree(t, repo.Storer, nodes), "crafted")
	return "file://" + dir
}

func commitOn(t testing.TB, repo *git.Repository, tree plumbing.Hash, msg string) plumbing.Hash {
	t.Helper()
	sig := object.Signature{Name: "t", Email: "t@example.com", When: time.Unix(1700000000, 0)}
	c := &object.Commit{Author: sig, Committer: sig, Message: msg, TreeHash: tree}
	if head, err := repo.Reference(plumbing.NewBranchReferenceName("main"), true); err == nil {
		c.ParentHashes = []plumbing.Hash{head.Hash()}
	}
	o := repo.Storer.NewEncodedObject()
	if err := c.Encode(o); err != nil {
		t.Fatal(err)
	}
	h, err := repo.Storer.SetEncodedObject(o)
	if err != nil {
		t.Fatal(err)
	}
	main := plumbing.NewBranchReferenceName("main")
	if err := repo.Storer.SetReference(plumbing.NewHashReference(main, h)); err != nil {
		t.Fatal(err)
	}
	if err := repo.Storer.SetReference(plumbing.NewSymbolicReference(plumbing.HEAD, main)); err != nil {
		t.Fatal(err)
	}
	return h
}

func testPoller(t testing.TB, url string, ref Ref) *Poller {
	t.Helper()
	opts := DefaultOptions()
	opts.URL, opts.Ref, opts.CacheDir, opts.Timeout = url, ref, filepath.Join(t.TempDir(), "cache"), 20*time.Second
	p, err := NewPoller(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// files lists every path under dir (links not followed).
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			out = append(out, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return out
}

// TestHostileTrees polls crafted commits whose trees try to write outside
// the checkout or to hide content, and checks that each is refused with a
// message naming the entry, and that nothing at all was written: not in
// the cache (no tree, no temporary directory) and not outside it.
func TestHostileTrees(t *testing.T) {
	pwn := file("pwned", "owned\n")
	tests := []struct {
		name  string
		tree  []node
		want  string
		limit CheckoutLimits
	}{
		{name: "dot-dot directory", tree: []node{dir("..", pwn)}, want: `"..": tree entry named ".."`},
		{name: "dot-dot in a name", tree: []node{file("../pwned", "x")}, want: `"../pwned": tree entry name holds a slash`},
		{name: "deep dot-dot in a name", tree: []node{dir("a", file("../../../pwned", "x"))}, want: `"a/../../../pwned": tree entry name holds a slash`},
		{name: "absolute name", tree: []node{file("/tmp/pwned", "x")}, want: `"/tmp/pwned": tree entry name holds a slash`},
		{name: "dot name", tree: []node{dir(".", pwn)}, want: `tree entry named "."`},
		{name: ".git directory", tree: []node{dir(".git", dir("hooks", file("post-checkout", "#!/bin/sh\n")))}, want: `".git": tree entry inside .git`},
		{name: ".GIT directory", tree: []node{dir(".GIT", file("config", "x"))}, want: `".GIT": tree entry inside .git`},
		{name: "a link and a directory of one name", tree: []node{link("a", "../.."), dir("a", pwn)}, want: `"a": two entries of one tree have this name`},
		{name: "a directory and a link of one name", tree: []node{dir("a", pwn), link("a", "../..")}, want: `"a": two entries of one tree have this name`},
		{name: "two files of one name", tree: []node{file("cm.yaml", "a"), file("cm.yaml", "b")}, want: `"cm.yaml": two entries of one tree have this name`},
		{name: "duplicate deep in the tree", tree: []node{dir("x", dir("y", file("f", "1"), file("f", "2")))}, want: `"x/y/f": two entries`},
		{name: "absolute link", tree: []node{link("passwd", "/etc/passwd")}, want: `"passwd" is a symlink to "/etc/passwd", which leads outside the checkout`},
		{name: "relative link out", tree: []node{dir("app", link("secrets", "../../outside"))}, want: `"app/secrets" is a symlink to "../../outside", which leads outside`},
		{name: "link through a link to dot", tree: []node{link("a", "."), link("b", "a/..")}, want: `"b" is a symlink to "a/..", which leads outside`},
		{name: "link to a link out", tree: []node{link("a", "b"), link("b", "/etc")}, want: `"a" is a symlink to "b", which leads outside`},
		{name: "link loop", tree: []node{link("a", "b"), link("b", "a")}, want: `"a": too many levels of symbolic links`},
		{name: "link with NUL", tree: []node{link("a", "x\x00y")}, want: `"a": symlink with an empty target or a NUL byte`},
		{name: "LFS pointer", tree: []node{dir("app", file("big.yaml", "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n"))},
			want: `"app/big.yaml" is a Git LFS pointer; refit does not fetch LFS content`},
		{name: "file over its limit", tree: []node{file("a.yaml", strings.Repeat("x", 2048))}, limit: CheckoutLimits{MaxFileBytes: 1024},
			want: `"a.yaml": 2048 bytes, more than the limit of 1024 bytes per file`},
		{name: "tree over its limit", tree: []node{file("a", strings.Repeat("a", 600)), file("b", strings.Repeat("b", 600))}, limit: CheckoutLimits{MaxTreeBytes: 1000},
			want: `"b": the tree holds more than the limit of 1000 bytes`},
		{name: "too many entries", tree: []node{dir("d", file("1", ""), file("2", ""), file("3", ""))}, limit: CheckoutLimits{MaxEntries: 3},
			want: `"d/3": more than 3 files, directories and links`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := craftRepo(t, tc.tree)
			p := testPoller(t, url, Ref{Branch: "main"})
			var err error
			if tc.limit != (CheckoutLimits{}) {
				err = checkoutWith(t, url, tc.limit)
			} else {
				_, err = p.Poll(t.Context())
			}
			if err == nil {
				t.Fatalf("checkout succeeded, want an error containing %s", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrTreeRefused) {
				t.Errorf("error = %v\nwant one containing %s, and ErrTreeRefused", err, tc.want)
			}
			// The test's whole temporary tree: the repository and the cache.
			top := filepath.Dir(filepath.Dir(p.dir))
			for _, f := range files(t, top) {
				if strings.Contains(f, "pwned") && !strings.Contains(f, "repo.git") {
					t.Errorf("%s written", f)
				}
			}
			if got := files(t, p.dir); len(got) != 0 {
				t.Errorf("cache holds %v after a refused checkout, want nothing", got)
			}
		})
	}
}

// checkoutWith fetches url's main branch and checks it out with lim.
func checkoutWith(t testing.TB, url string, lim CheckoutLimits) error {
	t.Helper()
	p := testPoller(t, url, Ref{Branch: "main"})
	gitDir := t.TempDir()
	refs, err := p.list(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tgt, err := resolve(p.opts.Ref, refs)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := p.fetchRepo(t.Context(), tgt, gitDir, CheckoutLimits{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(tgt.commit)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := c.Tree()
	if err != nil {
		t.Fatal(err)
	}
	return writeTree(repo.Storer, tree, t.TempDir(), lim)
}

// TestSafeTree checks what a checkout keeps: links inside the tree (also
// through other links and "..", and dangling ones), executable bits,
// empty files, submodules left out, a file one byte under its limit.
func TestSafeTree(t *testing.T) {
	tree := []node{
		dir("base", file("cm.yaml", "kind: ConfigMap\n"), file("empty", "")),
		dir("overlays", dir("prod", link("base", "../../base"), link("cm.yaml", "base/cm.yaml"))),
		link("here", "."),
		link("up-and-back", "base/../overlays"),
		link("dangling", "missing/file"),
		{name: "run.sh", mode: filemode.Executable, content: "#!/bin/sh\n"},
		{name: "vendored", mode: filemode.Submodule, content: strings.Repeat("ab", 20)},
		file("lfs-notes.md", "see version https://git-lfs.github.com/spec/v1\n"),
	}
	p := testPoller(t, craftRepo(t, tree), Ref{Branch: "main"})
	rev, err := p.Poll(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := "base base/cm.yaml base/empty dangling here lfs-notes.md overlays overlays/prod overlays/prod/base overlays/prod/cm.yaml run.sh up-and-back"
	if got := strings.Join(files(t, rev.Dir), " "); got != want {
		t.Errorf("checkout holds\n%s\nwant\n%s", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(rev.Dir, "overlays/prod/cm.yaml")); err != nil || string(b) != "kind: ConfigMap\n" {
		t.Errorf("cm.yaml through two links = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(rev.Dir, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh mode = %v, %v", fi, err)
	}
}

// TestLinkLeaves resolves links as the kernel would, against the tree.
func TestLinkLeaves(t *testing.T) {
	tests := []struct {
		name  string
		links map[string]string
		link  string
		want  bool
	}{
		{"sibling", map[string]string{"a": "b"}, "a", false},
		{"down and up", map[string]string{"x/a": "../y/b"}, "x/a", false},
		{"one level too high", map[string]string{"x/a": "../../b"}, "x/a", true},
		{"absolute", map[string]string{"a": "/etc"}, "a", true},
		{"dot then up", map[string]string{"a": ".", "b": "a/.."}, "b", true},
		{"deep link then up", map[string]string{"a": "x/y", "b": "a/../.."}, "b", false},
		{"shallow link then up twice", map[string]string{"d/a": "..", "d/b": "a/../.."}, "d/b", true},
		{"chain to absolute", map[string]string{"a": "b", "b": "c", "c": "/"}, "a", true},
		{"missing then up", map[string]string{"a": "missing/../../x"}, "a", true},
		{"missing then down", map[string]string{"a": "missing/x/.."}, "a", false},
		{"double slashes", map[string]string{"a": "x//y/./z"}, "a", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := linkLeaves(tc.link, tc.links)
			if err != nil || got != tc.want {
				t.Errorf("linkLeaves(%s) = %v, %v; want %v", tc.link, got, err, tc.want)
			}
		})
	}
}

// TestPinnedCommitIsShallow pins a commit deep in history and checks that
// the fetch brought that commit alone when the server allows asking for a
// SHA, and the history (the fallback) when it does not.
func TestPinnedCommitIsShallow(t *testing.T) {
	for _, allow := range []bool{true, false} {
		t.Run(fmt.Sprintf("server allows SHA wants: %v", allow), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo.git")
			repo, err := git.PlainInit(dir, true)
			if err != nil {
				t.Fatal(err)
			}
			if allow {
				cfg, err := repo.Config()
				if err != nil {
					t.Fatal(err)
				}
				cfg.Raw.Section("uploadpack").SetOption("allowReachableSHA1InWant", "true")
				if err := repo.SetConfig(cfg); err != nil {
					t.Fatal(err)
				}
			}
			var shas []plumbing.Hash
			for i := range 5 {
				shas = append(shas, commitOn(t, repo, storeTree(t, repo.Storer, []node{file("v", fmt.Sprint(i))}), fmt.Sprint(i)))
			}
			p := testPoller(t, "file://"+dir, Ref{Commit: shas[1].String()})
			refs, err := p.list(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			tgt, err := resolve(p.opts.Ref, refs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.fetchRepo(context.Background(), tgt, t.TempDir(), CheckoutLimits{})
			if err != nil {
				t.Fatal(err)
			}
			iter, err := got.CommitObjects()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			_ = iter.ForEach(func(*object.Commit) error { n++; return nil })
			want := 5
			if allow {
				want = 1
			}
			if n != want {
				t.Errorf("fetched %d commits, want %d", n, want)
			}
			rev, err := p.Poll(t.Context())
			if err != nil || rev.Commit != shas[1].String() {
				t.Fatalf("poll = %s, %v; want %s", rev.Commit, err, shas[1])
			}
			if b, _ := os.ReadFile(filepath.Join(rev.Dir, "v")); string(b) != "1" {
				t.Errorf("v = %q, want 1", b)
			}
		})
	}
}

func TestCheckName(t *testing.T) {
	tests := []struct{ dir, name, want string }{
		{"", "cm.yaml", ""},
		{"a", "...", ""},
		{"a", "x\\y", ""},
		{"a", "", `"a/": empty name in a tree`},
		{"a", "..", `"a/..": tree entry named ".."`},
		{"", ".", `".": tree entry named "."`},
		{"a", "b/c", `"a/b/c": tree entry name holds a slash or NUL`},
		{"", "/etc", `"/etc": tree entry name holds a slash or NUL`},
		{"a", "x\x00", `"a/x\x00": tree entry name holds a slash or NUL`},
		{"a", ".Git", `"a/.Git": tree entry inside .git`},
	}
	for _, tc := range tests {
		err := checkName(tc.dir, tc.name)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if tc.want == "" && err != nil || tc.want != "" && (!strings.Contains(got, tc.want) || !errors.Is(err, ErrTreeRefused)) {
			t.Errorf("checkName(%q, %q) = %v, want %q", tc.dir, tc.name, err, tc.want)
		}
	}
}
