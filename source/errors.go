package source

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/skeema/knownhosts"
)

// The kinds of failure a poll reports; test with errors.Is. Every error the
// package returns for a repository is an *Error carrying one of them.
var (
	// ErrAuth: the remote refused the credentials, or none were given.
	ErrAuth = errors.New("authentication failed")
	// ErrNotFound: the repository, ref, tag or commit does not exist
	// (anymore), or no tag matches the semver range.
	ErrNotFound = errors.New("not found")
	// ErrHostKey: the SSH host key is not in known_hosts or differs from it.
	ErrHostKey = errors.New("host key verification failed")
	// ErrTimeout: a network call did not finish in time.
	ErrTimeout = errors.New("timed out")
	// ErrTransport: any other network or protocol failure.
	ErrTransport = errors.New("transport error")
	// ErrConfig: the options are invalid (bad URL, ref, key or known_hosts).
	ErrConfig = errors.New("invalid configuration")
	// ErrTreeRefused: the commit's tree cannot be checked out safely (a
	// name or symlink leaving the checkout, duplicate names, a file or
	// tree over its size limit, a Git LFS pointer). It is the commit's
	// fault: polling again fetches the same tree.
	ErrTreeRefused = errors.New("tree refused")
)

// Error says which repository and ref failed, at which step, and how. URL
// never carries credentials, and Detail has them scrubbed.
type Error struct {
	URL    string
	Ref    string
	Op     string
	Kind   error
	Detail string
	// ctxErr keeps context.Canceled/DeadlineExceeded reachable by errors.Is
	// without exposing the raw cause, whose text may hold credentials.
	ctxErr error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("git ")
	b.WriteString(e.URL)
	if e.Ref != "" {
		b.WriteString(" (" + e.Ref + ")")
	}
	b.WriteString(": " + e.Op + ": " + e.Kind.Error())
	if e.Detail != "" && e.Detail != e.Kind.Error() {
		b.WriteString(": " + e.Detail)
	}
	return b.String()
}

// Unwrap exposes the kind and, for cancellations, the context's error.
func (e *Error) Unwrap() []error {
	if e.ctxErr != nil {
		return []error{e.Kind, e.ctxErr}
	}
	return []error{e.Kind}
}

// classify maps a go-git, SSH or network error to one of the kinds.
func classify(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, ErrTreeRefused):
		return ErrTreeRefused
	case errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout
	case errors.Is(err, transport.ErrAuthenticationRequired),
		errors.Is(err, transport.ErrAuthorizationFailed),
		errors.Is(err, transport.ErrInvalidAuthMethod),
		strings.Contains(msg, "unable to authenticate"):
		return ErrAuth
	case errors.Is(err, transport.ErrRepositoryNotFound),
		errors.Is(err, transport.ErrEmptyRemoteRepository):
		return ErrNotFound
	case knownhosts.IsHostKeyChanged(err), knownhosts.IsHostUnknown(err),
		strings.Contains(msg, "knownhosts:"):
		return ErrHostKey
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	return ErrTransport
}

// userinfo matches credentials in URLs inside error text: all of them for
// HTTP(S), where a username can be a token, and the password for others.
var (
	httpUserinfo  = regexp.MustCompile(`(?i)(https?://)[^/\s@]+@`)
	otherPassword = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+):[^/\s@]+@`)
)

// ScrubURLs removes the credentials of URLs in s (text meant for an error,
// a log or a status), by the rule scrub applies to this package's errors.
func ScrubURLs(s string) string { return scrub(s) }

// scrub removes secrets and URL credentials from text meant for errors and logs.
func scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 { // short values would mangle ordinary words
			s = strings.ReplaceAll(s, sec, "***")
		}
	}
	s = httpUserinfo.ReplaceAllString(s, "$1")
	return otherPassword.ReplaceAllString(s, "$1@")
}
