package apply

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func TestIsImmutable(t *testing.T) {
	invalid := func(errs ...*field.Error) error {
		return apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "j", errs)
	}
	spec := field.NewPath("spec")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"job template", invalid(field.Invalid(spec.Child("template"), "x", "field is immutable")), true},
		{"service clusterIP", invalid(field.Invalid(spec.Child("clusterIPs").Index(0), "None", "may not change once set")), true},
		{"statefulset spec", invalid(field.Forbidden(spec, "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")), true},
		{"immutable and invalid", invalid(field.Invalid(spec.Child("selector"), "x", "field is immutable"), field.Required(spec.Child("template", "spec", "containers"), "")), false},
		{"merely invalid", invalid(field.Invalid(spec.Child("selector"), "x", "`selector` does not match template `labels`")), false},
		{"wrapped", fmt.Errorf("dry-run: %w", invalid(field.Invalid(spec.Child("template"), "x", "field is immutable"))), true},
		{"conflict", apierrors.NewConflict(schema.GroupResource{Resource: "jobs"}, "j", errors.New("immutable")), false},
		{"not an API error", errors.New("field is immutable"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsImmutable(tc.err); got != tc.want {
				t.Errorf("IsImmutable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestImmutableErrorIsBrief(t *testing.T) {
	api := apierrors.NewInvalid(schema.GroupKind{Group: "batch", Kind: "Job"}, "j",
		field.ErrorList{field.Invalid(field.NewPath("spec", "template"), map[string]any{"huge": strings.Repeat("x", 500)}, "field is immutable")})
	err := error(&immutableError{err: api})
	if len(err.Error()) > 200 || !strings.Contains(err.Error(), "spec.template: field is immutable") {
		t.Errorf("message %q: want spec.template named briefly", err)
	}
	if !errors.Is(err, ErrImmutable) || !apierrors.IsInvalid(err) {
		t.Errorf("%v: want both ErrImmutable and the API error reachable", err)
	}
}
