package source

import (
	"errors"
	"testing"

	"github.com/go-git/go-git/v5/plumbing"
)

func TestParseRef(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		in      string
		want    Ref
		wantErr bool
	}{
		{"", Ref{}, false},
		{"main", Ref{Branch: "main"}, false},
		{"branch:release/1.x", Ref{Branch: "release/1.x"}, false},
		{"refs/heads/dev", Ref{Branch: "dev"}, false},
		{"tag:v1.2.3", Ref{Tag: "v1.2.3"}, false},
		{"refs/tags/v1", Ref{Tag: "v1"}, false},
		{"semver:>=1.0.0 <2.0.0", Ref{SemVer: ">=1.0.0 <2.0.0"}, false},
		{"commit:" + sha, Ref{Commit: sha}, false},
		{sha, Ref{Commit: sha}, false},
		{"semver:not a range", Ref{}, true},
		{"commit:abc123", Ref{}, true},
		{"branch:a..b", Ref{}, true},
		{"branch:-x", Ref{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRef(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if !tc.wantErr && got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	h := func(c byte) plumbing.Hash {
		var x plumbing.Hash
		for i := range x {
			x[i] = c
		}
		return x
	}
	refs := []*plumbing.Reference{
		plumbing.NewSymbolicReference(plumbing.HEAD, "refs/heads/main"),
		plumbing.NewHashReference("refs/heads/main", h(1)),
		plumbing.NewHashReference("refs/heads/dev", h(2)),
		plumbing.NewHashReference("refs/tags/v1.0.0", h(3)), // lightweight
		plumbing.NewHashReference("refs/tags/v1.2.0", h(4)), // annotated: tag object
		plumbing.NewHashReference("refs/tags/v1.2.0^{}", h(5)),
		plumbing.NewHashReference("refs/tags/v2.0.0", h(6)),
		plumbing.NewHashReference("refs/tags/v1.3.0-rc.1", h(7)),
		plumbing.NewHashReference("refs/tags/not-semver", h(8)),
	}
	tests := []struct {
		name    string
		ref     Ref
		want    target
		wantErr error
	}{
		{"default branch", Ref{}, target{"refs/heads/main", h(1), true}, nil},
		{"branch", Ref{Branch: "dev"}, target{"refs/heads/dev", h(2), true}, nil},
		{"missing branch", Ref{Branch: "gone"}, target{}, ErrNotFound},
		{"lightweight tag", Ref{Tag: "v1.0.0"}, target{"refs/tags/v1.0.0", h(3), true}, nil},
		{"annotated tag peels", Ref{Tag: "v1.2.0"}, target{"refs/tags/v1.2.0", h(5), true}, nil},
		{"missing tag", Ref{Tag: "v9"}, target{}, ErrNotFound},
		{"semver highest in range", Ref{SemVer: "^1.0.0"}, target{"refs/tags/v1.2.0", h(5), true}, nil},
		{"semver pre-release only when asked", Ref{SemVer: ">=1.3.0-0 <2.0.0"}, target{"refs/tags/v1.3.0-rc.1", h(7), true}, nil},
		{"semver any", Ref{SemVer: "*"}, target{"refs/tags/v2.0.0", h(6), true}, nil},
		{"semver no match", Ref{SemVer: ">=3"}, target{}, ErrNotFound},
		{"commit at a branch tip", Ref{Commit: h(2).String()}, target{"refs/heads/dev", h(2), true}, nil},
		{"commit at a tag tip", Ref{Commit: h(5).String()}, target{"refs/tags/v1.2.0", h(5), true}, nil},
		{"commit in history", Ref{Commit: h(9).String()}, target{"", h(9), false}, nil},
		{"commit on branch", Ref{Commit: h(9).String(), Branch: "dev"}, target{"refs/heads/dev", h(9), false}, nil},
		{"commit on missing branch", Ref{Commit: h(9).String(), Branch: "gone"}, target{}, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := resolve(tc.ref, refs)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
