package source_test

import (
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/refit-gitops/refit/source"
)

// verifyingPoller polls a file:// repository, requiring keys' signatures.
func verifyingPoller(t testing.TB, dir, cache string, ref source.Ref, keys *source.Keys) *source.Poller {
	t.Helper()
	opts := source.DefaultOptions()
	opts.URL, opts.Ref, opts.CacheDir, opts.Verify = "file://"+dir, ref, cache, keys
	opts.Timeout = 10 * time.Second
	p, err := source.NewPoller(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// treesOf lists the checked-out trees in a cache folder that hold commit.
func treesOf(t testing.TB, cache string, commit plumbing.Hash) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), commit.String()) {
			found = append(found, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// refused polls, expects the commit to be refused for reason, and that
// nothing of it was checked out.
func refused(t testing.TB, p *source.Poller, cache string, commit plumbing.Hash, reason string) source.Revision {
	t.Helper()
	rev, err := p.Poll(t.Context())
	if !errors.Is(err, source.ErrUnverified) || !strings.Contains(err.Error(), reason) {
		t.Fatalf("poll of %s: %v; want an untrusted commit: %q", commit, err, reason)
	}
	if rev.Commit != commit.String() || rev.Dir != "" {
		t.Fatalf("refused poll returned commit %q, dir %q; want commit %s and no dir", rev.Commit, rev.Dir, commit)
	}
	if trees := treesOf(t, cache, commit); len(trees) > 0 {
		t.Fatalf("refused commit %s was checked out: %v", commit, trees)
	}
	return rev
}

func TestPollVerifiesHead(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	bob, eve := newSSHKey(t), newSSHKey(t)
	p := verifyingPoller(t, dir, cache, source.Ref{Branch: "master"}, parseKeys(t, bob.authorized()))

	good := commitWith(t, repo, "kind: ConfigMap # v1\n", bob)
	rev := poll(t, p)
	if rev.Commit != good.String() || rev.Signer != "SSH key "+bob.fingerprint() || readFile(t, rev.Dir, "app.yaml") != "kind: ConfigMap # v1\n" {
		t.Fatalf("signed head: %+v", rev)
	}

	unsigned := commitWith(t, repo, "kind: ConfigMap # v2\n", nil)
	rev = refused(t, p, cache, unsigned, "untrusted commit: commit "+unsigned.String()+" is not signed")
	if rev.Ref != "refs/heads/master" || !strings.HasPrefix(rev.Message, "change kind: ConfigMap # v2") {
		t.Fatalf("refused revision does not describe the commit: %+v", rev)
	}
	// The refusal is remembered: the next poll lists refs but fetches nothing.
	fetches := p.Stats().Fetches
	refused(t, p, cache, unsigned, "is not signed")
	if got := p.Stats().Fetches; got != fetches {
		t.Fatalf("a poll of the same refused commit fetched again: %d fetches, then %d", fetches, got)
	}

	other := commitWith(t, repo, "kind: ConfigMap # v3\n", eve)
	refused(t, p, cache, other, "is signed by SSH key "+eve.fingerprint()+" (ssh-ed25519), which is not trusted")

	fixed := commitWith(t, repo, "kind: ConfigMap # v4\n", bob)
	if rev := poll(t, p); rev.Commit != fixed.String() || readFile(t, rev.Dir, "app.yaml") != "kind: ConfigMap # v4\n" {
		t.Fatalf("signed commit after refused ones: %+v", rev)
	}
}

// An annotated tag is not itself verified: the commit it points at is.
func TestPollVerifiesTaggedAndPinnedCommits(t *testing.T) {
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	alice := newPGPKey(t, "Alice")
	keys := parseKeys(t, alice.public(t))
	tag := func(name string, sha plumbing.Hash) {
		t.Helper()
		_, err := repo.CreateTag(name, sha, &git.CreateTagOptions{Message: "release " + name,
			Tagger: &object.Signature{Name: "Dev", Email: "dev@example.com", When: time.Now()}})
		if err != nil {
			t.Fatal(err)
		}
	}
	signed := commitWith(t, repo, "v1\n", alice)
	tag("v1.0.0", signed)
	unsigned := commitWith(t, repo, "v2\n", nil)
	tag("v2.0.0", unsigned)

	if rev := poll(t, verifyingPoller(t, dir, t.TempDir(), source.Ref{Tag: "v1.0.0"}, keys)); rev.Commit != signed.String() {
		t.Fatalf("tag on a signed commit: got %s, want %s", rev.Commit, signed)
	}
	cache := t.TempDir()
	refused(t, verifyingPoller(t, dir, cache, source.Ref{Tag: "v2.0.0"}, keys), cache, unsigned, "is not signed")
	cache = t.TempDir()
	refused(t, verifyingPoller(t, dir, cache, source.Ref{SemVer: ">=1.0.0"}, keys), cache, unsigned, "is not signed")
	cache = t.TempDir()
	refused(t, verifyingPoller(t, dir, cache, source.Ref{Commit: unsigned.String()}, keys), cache, unsigned, "is not signed")
	if rev := poll(t, verifyingPoller(t, dir, t.TempDir(), source.Ref{Commit: signed.String()}, keys)); rev.Commit != signed.String() {
		t.Fatalf("pinned signed commit: got %s, want %s", rev.Commit, signed)
	}
}

// A tree checked out without verification (or under other keys) in a
// shared cache folder is not taken as verified.
func TestVerifiedCacheIsSeparate(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := commitWith(t, repo, "v1\n", nil)
	ref := source.Ref{Commit: unsigned.String()}
	if rev := poll(t, verifyingPoller(t, dir, cache, ref, nil)); rev.Commit != unsigned.String() {
		t.Fatalf("poll without keys: %+v", rev)
	}
	p := verifyingPoller(t, dir, cache, ref, parseKeys(t, newSSHKey(t).authorized()))
	if _, err := p.Poll(t.Context()); !errors.Is(err, source.ErrUnverified) {
		t.Fatalf("poll with keys of a commit cached without them: %v; want it refused", err)
	}
}
