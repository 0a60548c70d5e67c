package source

import (
	"fmt"
	"strings"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5/plumbing"
)

// Ref says what to track. At most one of Branch, Tag and SemVer; Commit pins
// a commit and may name the Branch to fetch it from. All empty follows the
// remote's default branch (its HEAD).
type Ref struct {
	Branch string `json:"branch,omitempty"`
	Tag    string `json:"tag,omitempty"`
	// SemVer is a range over tags ("^1.2", ">=1.0.0 <2.0.0"); the highest
	// matching tag wins. A leading "v" on tags is accepted.
	SemVer string `json:"semver,omitempty"`
	// Commit is a full 40-character SHA.
	Commit string `json:"commit,omitempty"`
}

// isFullSHA reports a 40-character lower-case hex SHA-1.
func isFullSHA(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ParseRef reads a ref as given on a command line: "branch:NAME",
// "tag:NAME", "semver:RANGE", "commit:SHA", a full ref name
// (refs/heads/…, refs/tags/…), a 40-hex SHA, or a bare branch name.
func ParseRef(s string) (Ref, error) {
	var r Ref
	kind, val, ok := strings.Cut(s, ":")
	switch {
	case s == "":
	case ok && kind == "branch":
		r.Branch = val
	case ok && kind == "tag":
		r.Tag = val
	case ok && kind == "semver":
		r.SemVer = val
	case ok && kind == "commit":
		r.Commit = val
	case strings.HasPrefix(s, "refs/heads/"):
		r.Branch = strings.TrimPrefix(s, "refs/heads/")
	case strings.HasPrefix(s, "refs/tags/"):
		r.Tag = strings.TrimPrefix(s, "refs/tags/")
	case isFullSHA(s):
		r.Commit = s
	default:
		r.Branch = s
	}
	return r, r.Validate()
}

// Validate reports a ref that names nothing sensible.
func (r Ref) Validate() error {
	n := 0
	for _, v := range []string{r.Branch, r.Tag, r.SemVer} {
		if v != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return fmt.Errorf("ref %s: set only one of branch, tag and semver", r)
	case r.Commit != "" && (r.Tag != "" || r.SemVer != ""):
		return fmt.Errorf("ref %s: a commit can be combined with a branch only", r)
	case r.Commit != "" && !isFullSHA(r.Commit):
		return fmt.Errorf("ref %s: commit must be a full 40-character lower-case SHA", r)
	case r.SemVer != "":
		if _, err := semver.NewConstraint(r.SemVer); err != nil {
			return fmt.Errorf("ref %s: %w", r, err)
		}
	}
	for _, name := range []string{r.Branch, r.Tag} {
		if strings.ContainsAny(name, " ~^:?*[\\") || strings.HasPrefix(name, "-") || strings.Contains(name, "..") {
			return fmt.Errorf("ref %s: invalid name %q", r, name)
		}
	}
	return nil
}

func (r Ref) String() string {
	switch {
	case r.Commit != "" && r.Branch != "":
		return "commit " + r.Commit + " on branch " + r.Branch
	case r.Commit != "":
		return "commit " + r.Commit
	case r.SemVer != "":
		return "semver " + r.SemVer
	case r.Tag != "":
		return "tag " + r.Tag
	case r.Branch != "":
		return "branch " + r.Branch
	}
	return "default branch"
}

// target is what a ref resolves to on the remote: the ref to fetch (empty
// when a pinned commit is at the tip of no ref), the commit, and whether
// that commit is the ref's tip, so that a depth-1 fetch brings it.
type target struct {
	name    plumbing.ReferenceName
	commit  plumbing.Hash
	shallow bool
}

// resolve picks the target of r among advertised refs (as listed with
// peeled tags appended, "refs/tags/x^{}" naming the commit of an annotated
// tag). It is pure, so every case is table-tested without a server.
func resolve(r Ref, refs []*plumbing.Reference) (target, error) {
	hashes := map[plumbing.ReferenceName]plumbing.Hash{}
	var head plumbing.ReferenceName
	for _, ref := range refs {
		switch ref.Type() {
		case plumbing.HashReference:
			hashes[ref.Name()] = ref.Hash()
		case plumbing.SymbolicReference:
			if ref.Name() == plumbing.HEAD {
				head = ref.Target()
			}
		}
	}
	// commitOf peels an annotated tag to its commit when the peeled entry exists.
	commitOf := func(name plumbing.ReferenceName) (plumbing.Hash, bool) {
		if h, ok := hashes[name+"^{}"]; ok {
			return h, true
		}
		h, ok := hashes[name]
		return h, ok
	}
	switch {
	case r.Commit != "":
		return resolveCommit(r, hashes, commitOf)
	case r.SemVer != "":
		return resolveSemVer(r, hashes, commitOf)
	case r.Tag != "":
		name := plumbing.NewTagReferenceName(r.Tag)
		if h, ok := commitOf(name); ok {
			return target{name, h, true}, nil
		}
		return target{}, fmt.Errorf("tag %s: %w", r.Tag, ErrNotFound)
	case r.Branch != "":
		name := plumbing.NewBranchReferenceName(r.Branch)
		if h, ok := hashes[name]; ok {
			return target{name, h, true}, nil
		}
		return target{}, fmt.Errorf("branch %s: %w", r.Branch, ErrNotFound)
	}
	if h, ok := hashes[head]; ok && head.IsBranch() {
		return target{head, h, true}, nil
	}
	return target{}, fmt.Errorf("remote HEAD names no branch; set a ref: %w", ErrNotFound)
}

func resolveCommit(r Ref, hashes map[plumbing.ReferenceName]plumbing.Hash,
	commitOf func(plumbing.ReferenceName) (plumbing.Hash, bool)) (target, error) {
	want := plumbing.NewHash(r.Commit)
	if r.Branch != "" {
		name := plumbing.NewBranchReferenceName(r.Branch)
		if _, ok := hashes[name]; !ok {
			return target{}, fmt.Errorf("branch %s: %w", r.Branch, ErrNotFound)
		}
		// Not the tip: somewhere in the branch's history, fetched without depth.
		return target{name, want, hashes[name] == want}, nil
	}
	// A commit at the tip of some ref can be fetched shallowly through it;
	// prefer branches, then tags, in name order for determinism.
	var best plumbing.ReferenceName
	for name := range hashes {
		if h, ok := commitOf(name); ok && h == want && !strings.HasSuffix(name.String(), "^{}") &&
			(name.IsBranch() || name.IsTag()) && (best == "" || better(name, best)) {
			best = name
		}
	}
	return target{best, want, best != ""}, nil
}

func better(a, b plumbing.ReferenceName) bool {
	if a.IsBranch() != b.IsBranch() {
		return a.IsBranch()
	}
	return a < b
}

func resolveSemVer(r Ref, hashes map[plumbing.ReferenceName]plumbing.Hash,
	commitOf func(plumbing.ReferenceName) (plumbing.Hash, bool)) (target, error) {
	c, err := semver.NewConstraint(r.SemVer)
	if err != nil {
		return target{}, fmt.Errorf("semver %q: %w", r.SemVer, ErrConfig)
	}
	var best *semver.Version
	var bestName plumbing.ReferenceName
	for name := range hashes {
		if !name.IsTag() || strings.HasSuffix(name.String(), "^{}") {
			continue
		}
		v, err := semver.NewVersion(name.Short())
		if err != nil || !c.Check(v) {
			continue
		}
		// Equal versions ("v1.0.0" and "1.0.0"): the lower name wins, for
		// determinism.
		if best == nil || v.GreaterThan(best) || (v.Equal(best) && name < bestName) {
			best, bestName = v, name
		}
	}
	if best == nil {
		return target{}, fmt.Errorf("no tag matches semver %q: %w", r.SemVer, ErrNotFound)
	}
	h, _ := commitOf(bestName)
	return target{bestName, h, true}, nil
}
