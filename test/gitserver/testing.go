package gitserver

import "testing"

// TestRepo is a Repo bound to a test: its helpers fail the test on error
// instead of returning it.
type TestRepo struct {
	t testing.TB
	r *Repo
}

// NewRepo creates a repository for a test.
func (s *Server) NewRepo(t testing.TB, name string) *TestRepo {
	t.Helper()
	r, err := s.CreateRepo(name)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return &TestRepo{t: t, r: r}
}

// Repo is the underlying repository.
func (tr *TestRepo) Repo() *Repo { return tr.r }

// HTTPURL, SSHURL and FileURL are the repository's URLs.
func (tr *TestRepo) HTTPURL() string { return tr.r.HTTPURL() }
func (tr *TestRepo) SSHURL() string  { return tr.r.SSHURL() }
func (tr *TestRepo) FileURL() string { return tr.r.FileURL() }

// Commit commits files on the current branch, pushes, and returns the SHA.
func (tr *TestRepo) Commit(files map[string]string, msg string) string {
	tr.t.Helper()
	sha, err := tr.r.Commit(files, msg)
	tr.check(err)
	return sha
}

// Remove deletes paths in a new commit, pushes, and returns the SHA.
func (tr *TestRepo) Remove(paths []string, msg string) string {
	tr.t.Helper()
	sha, err := tr.r.Remove(paths, msg)
	tr.check(err)
	return sha
}

// Checkout switches to (or creates) branch.
func (tr *TestRepo) Checkout(branch string) {
	tr.t.Helper()
	tr.check(tr.r.Checkout(branch))
}

// Tag creates or moves a tag (annotated when message is set) and pushes it.
func (tr *TestRepo) Tag(name, sha, message string) {
	tr.t.Helper()
	tr.check(tr.r.Tag(name, sha, message))
}

// ResetBranch force-pushes branch to sha.
func (tr *TestRepo) ResetBranch(branch, sha string) {
	tr.t.Helper()
	tr.check(tr.r.ResetBranch(branch, sha))
}

// DeleteRef deletes a ref on the server.
func (tr *TestRepo) DeleteRef(ref string) {
	tr.t.Helper()
	tr.check(tr.r.DeleteRef(ref))
}

func (tr *TestRepo) check(err error) {
	tr.t.Helper()
	if err != nil {
		tr.t.Fatalf("%v", err)
	}
}
