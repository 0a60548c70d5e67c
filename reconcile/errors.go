package reconcile

import (
	"errors"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
)

// BadCommitError means the commit itself cannot be applied: it does not
// render, holds an invalid object, or the API server refuses one. Retrying
// the same commit cannot help: refit reports failure and waits for a new one.
type BadCommitError struct{ Err error }

func (e *BadCommitError) Error() string { return e.Err.Error() }
func (e *BadCommitError) Unwrap() error { return e.Err }

// IsBadCommit reports whether err is the commit's fault (see BadCommitError).
func IsBadCommit(err error) bool {
	var bad *BadCommitError
	var obj *diff.ObjectError
	var val *apply.ValidationError
	return errors.As(err, &bad) || errors.As(err, &obj) || errors.As(err, &val)
}
