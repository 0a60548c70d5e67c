package reconcile

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/source"
)

// BadCommitError means the commit itself cannot be applied: it does not
// render, holds an invalid object, or the API server refuses one. Retrying
// the same commit cannot help: refit reports failure and waits for a new one.
type BadCommitError struct{ Err error }

func (e *BadCommitError) Error() string { return e.Err.Error() }
func (e *BadCommitError) Unwrap() error { return e.Err }

// IsBadCommit reports whether err is the commit's fault (see
// BadCommitError) rather than a transient failure of the network, the API
// server or refit itself, which is retried.
func IsBadCommit(err error) bool {
	if isTransient(err) {
		return false
	}
	var bad *BadCommitError
	var obj *diff.ObjectError
	var val *apply.ValidationError
	return errors.As(err, &bad) || errors.As(err, &obj) || errors.As(err, &val) || errors.Is(err, apply.ErrEmptyRender) ||
		errors.Is(err, source.ErrUnverified) || errors.Is(err, source.ErrTreeRefused)
}

// isTransient finds, anywhere in err's tree, a cause that retrying can cure.
func isTransient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var urlErr *url.Error
	var netErr net.Error
	if errors.As(err, &urlErr) || errors.As(err, &netErr) {
		return true
	}
	transient := false
	walk(err, func(e error) {
		transient = transient || apierrors.IsServerTimeout(e) || apierrors.IsTimeout(e) || apierrors.IsServiceUnavailable(e) ||
			apierrors.IsTooManyRequests(e) || apierrors.IsInternalError(e) && !isTypingError(e)
	})
	return transient
}

// isTypingError: server-side apply answers 500 when an object does not fit
// its schema (a string where a number belongs): the commit's fault.
func isTypingError(err error) bool {
	return strings.Contains(err.Error(), "failed to create typed patch object")
}

// walk calls fn on err and every error it wraps, through joins.
func walk(err error, fn func(error)) {
	if err == nil {
		return
	}
	fn(err)
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			walk(e, fn)
		}
	case interface{ Unwrap() error }:
		walk(u.Unwrap(), fn)
	}
}
