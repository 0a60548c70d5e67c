package status

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// State is the outcome a commit status reports. Providers name it their own
// way (GitLab "failed", Bitbucket "FAILED"); each maps these four.
type State string

const (
	// Pending: refit is applying the commit or waiting for it to settle.
	Pending State = "pending"
	// Success: the commit is applied and healthy.
	Success State = "success"
	// Failure: the commit is bad (render error, invalid or refused change,
	// failed rollout); refit waits for a new one.
	Failure State = "failure"
	// Error: refit could not do its job (API or network trouble).
	Error State = "error"
)

// MaxDescription is the longest description sent, in characters: GitHub
// refuses longer ones with 422, and the other hosts show about as much.
const MaxDescription = 140

// Status is one commit status.
type Status struct {
	// Commit is the full (or at least 7-character) hex SHA.
	Commit string
	State  State
	// Context tells this status apart from others on the same commit,
	// e.g. "refit/<app>".
	Context string
	// Description is a one-line summary; longer ones are truncated to
	// MaxDescription characters.
	Description string
	// TargetURL, optional, is where the status links to.
	TargetURL string
}

func (s Status) validate() error {
	if !isHexSHA(s.Commit) {
		return fmt.Errorf("commit %q is not a hex SHA", s.Commit)
	}
	switch s.State {
	case Pending, Success, Failure, Error:
	default:
		return fmt.Errorf("unknown state %q (known: %s, %s, %s, %s)", s.State, Pending, Success, Failure, Error)
	}
	if s.Context == "" {
		return errors.New("status context is empty")
	}
	return nil
}

// isHexSHA accepts abbreviated to full SHA-1 and SHA-256 object names; the
// SHA goes into the request path, so nothing else may pass.
func isHexSHA(s string) bool {
	if len(s) < 7 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// Truncate shortens s to at most max characters (not bytes, so a
// multi-byte character is never cut in half), ending it with "…" when cut.
func Truncate(s string, max int) string {
	if max <= 0 {
		return ""
	}
	if utf8.RuneCountInString(s) <= max {
		return s
	}
	n := 0
	for i := range s {
		if n == max-1 {
			return s[:i] + "…"
		}
		n++
	}
	return s
}
