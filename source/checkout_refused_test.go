package source

import (
	"errors"
	"testing"
)

// TestRefusedTreeIsRemembered: a commit whose tree is refused is returned
// with the error (so the caller reports on it) and not fetched again
// until the ref moves.
func TestRefusedTreeIsRemembered(t *testing.T) {
	url := craftRepo(t, []node{link("passwd", "/etc/passwd")})
	p := testPoller(t, url, Ref{Branch: "main"})
	var first Revision
	for i := range 2 {
		rev, err := p.Poll(t.Context())
		if !errors.Is(err, ErrTreeRefused) || rev.Commit == "" || rev.Dir != "" {
			t.Fatalf("poll %d = %+v, %v; want the refused commit without Dir and ErrTreeRefused", i+1, rev, err)
		}
		if i == 0 {
			first = rev
		} else if rev.Commit != first.Commit {
			t.Errorf("second poll names commit %s, want %s", rev.Commit, first.Commit)
		}
	}
	if st := p.Stats(); st.Fetches != 1 {
		t.Errorf("stats = %+v, want 1 fetch: a refused commit is not fetched again", st)
	}
}
