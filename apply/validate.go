package apply

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/refit-gitops/refit/diff"
)

// ValidationError means the plan holds objects the API server refuses
// (schema, admission, immutable fields): nothing was written, or only the
// definitions needed to validate them, which were deleted again.
type ValidationError struct {
	// Objects are the refused objects, each naming its source file.
	Objects []*diff.ObjectError
	// RolledBack are the CRDs and Namespaces this apply created to
	// validate objects that need them, and deleted again.
	RolledBack []diff.Ref
	// Kept are definitions this apply changed (not created) before the
	// failure; they stay changed.
	Kept []diff.Ref
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Objects))
	for i, o := range e.Objects {
		msgs[i] = o.Error()
	}
	s := "nothing applied: " + strings.Join(msgs, "; ")
	if len(e.RolledBack) > 0 {
		s += fmt.Sprintf("; deleted again %s, created to validate them", refList(e.RolledBack))
	}
	if len(e.Kept) > 0 {
		s += fmt.Sprintf("; left changed %s", refList(e.Kept))
	}
	return s
}

// Unwrap gives errors.Is/As access to each object's error.
func (e *ValidationError) Unwrap() []error {
	out := make([]error, len(e.Objects))
	for i, o := range e.Objects {
		out[i] = o
	}
	return out
}

func refList(refs []diff.Ref) string {
	s := make([]string, len(refs))
	for i, r := range refs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

// ErrImmutable is wrapped by the error of an object whose change touches
// an immutable field and that is not forced.
var ErrImmutable = errors.New("immutable field changed")

const forceHint = `annotate the object with ` + ForceAnnotation + `: "true" to delete and recreate it`

// immutableError names the immutable fields briefly: the server's message
// quotes the whole new value (a Job's template runs to kilobytes).
type immutableError struct{ err error }

func (e *immutableError) Error() string {
	var fields []string
	var status apierrors.APIStatus
	if errors.As(e.err, &status) && status.Status().Details != nil {
		for _, c := range status.Status().Details.Causes {
			msg := c.Message
			if i := strings.LastIndex(msg, ": "); i >= 0 {
				msg = msg[i+2:]
			}
			fields = append(fields, c.Field+": "+msg)
		}
	}
	if len(fields) == 0 {
		return ErrImmutable.Error() + "; " + forceHint + ": " + e.err.Error()
	}
	return ErrImmutable.Error() + " (" + strings.Join(fields, "; ") + "); " + forceHint
}

func (e *immutableError) Unwrap() []error { return []error{ErrImmutable, e.err} }

// validate dry-runs items concurrently and fails, naming every refused
// object, if any is refused. An immutable-field refusal of a forced update
// marks the item for recreation instead.
func (r *run) validate(ctx context.Context, items []*item) error {
	errs := make([]*diff.ObjectError, len(items))
	forEach(len(items), r.opts.Concurrency, func(i int) {
		it := items[i]
		_, err := r.a.ssaApply(ctx, it.obj, client.DryRunAll)
		switch {
		case err == nil:
			return
		case it.change.Action == diff.Update && IsImmutable(err) && it.stage == stageDefinitions:
			// Deleting a CRD or a Namespace deletes everything it holds.
			errs[i] = &diff.ObjectError{Ref: it.change.Ref, Source: it.change.Source,
				Err: fmt.Errorf("%w: a CustomResourceDefinition or Namespace is never recreated: %w", ErrImmutable, err)}
		case it.change.Action == diff.Update && IsImmutable(err) && (r.opts.Force || forced(it.obj.GetAnnotations())):
			if !r.owned[unversioned(it.change.Ref)] {
				errs[i] = &diff.ObjectError{Ref: it.change.Ref, Source: it.change.Source, Err: fmt.Errorf(
					"%s: not deleted: app %s never applied it (it is not in the app's inventory), and refit deletes only what it applied: %w",
					ForceAnnotation, r.opts.App, err)}
				return
			}
			it.recreate = true
		case IsImmutable(err):
			errs[i] = &diff.ObjectError{Ref: it.change.Ref, Source: it.change.Source, Err: &immutableError{err: err}}
		default:
			errs[i] = &diff.ObjectError{Ref: it.change.Ref, Source: it.change.Source, Err: fmt.Errorf("server-side dry-run: %w", err)}
		}
	})
	var refused []*diff.ObjectError
	for _, e := range errs {
		if e != nil {
			refused = append(refused, e)
		}
	}
	if len(refused) > 0 {
		return &ValidationError{Objects: refused}
	}
	return ctx.Err()
}

func forced(annotations map[string]string) bool {
	return annotations[ForceAnnotation] == "true"
}

// immutablePhrases are the API server's words for a change it refuses
// because of immutability (apimachinery's ValidateImmutableField, the
// Service, StatefulSet, Pod and PersistentVolumeClaim update validations).
func immutableMessage(msg string) bool {
	msg = strings.ToLower(msg)
	for _, p := range []string{"immutable", "may not change once set", "spec for fields other than", "pod updates may not change fields other than"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// IsImmutable tells an update refused only because it touches immutable
// fields from any other invalid object: every cause the server gives must
// be about immutability. (ssa's IsImmutableError also accepts any Invalid
// error, which would recreate a merely invalid object.)
func IsImmutable(err error) bool {
	var status apierrors.APIStatus
	if !errors.As(err, &status) || !apierrors.IsInvalid(err) {
		return false
	}
	st := status.Status()
	if st.Details == nil || len(st.Details.Causes) == 0 {
		return immutableMessage(st.Message)
	}
	for _, c := range st.Details.Causes {
		if !immutableMessage(c.Message) {
			return false
		}
	}
	return true
}

// rollBack deletes the definitions this apply created, when objects that
// needed them turn out to be invalid: the plan is applied all or nothing.
func (r *run) rollBack(ctx context.Context, cause error, defs []*item) error {
	var verr *ValidationError
	if !errors.As(cause, &verr) {
		return cause
	}
	var errs []error
	for i := len(defs) - 1; i >= 0; i-- {
		it := defs[i]
		if it.change.Action != diff.Create {
			verr.Kept = append(verr.Kept, it.change.Ref)
			continue
		}
		// The UID precondition spares an object someone else created
		// between the plan and now.
		err := r.a.client.Delete(ctx, it.obj.DeepCopy(), client.PropagationPolicy(metav1.DeletePropagationBackground),
			client.Preconditions{UID: &it.uid})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("%s: roll back: %w", it.change.Ref, err))
			continue
		}
		verr.RolledBack = append(verr.RolledBack, it.change.Ref)
	}
	gone := map[diff.Ref]bool{}
	for _, ref := range verr.RolledBack {
		gone[ref] = true
	}
	r.mu.Lock()
	kept := r.result.Objects[:0]
	for _, o := range r.result.Objects {
		if !gone[o.Ref] {
			kept = append(kept, o)
		}
	}
	r.result.Objects = kept
	r.mu.Unlock()
	return errors.Join(append([]error{verr}, errs...)...)
}
