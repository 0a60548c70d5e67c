package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/source"
)

func TestIsBadCommit(t *testing.T) {
	ref := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: "b"}
	invalid := apierrors.NewInvalid(schema.GroupKind{Kind: "ConfigMap"}, "b", nil)
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"render error", &BadCommitError{Err: errors.New("app.yaml: line 3: bad indentation")}, true},
		{"object refused", &diff.ObjectError{Ref: ref, Err: invalid}, true},
		{"joined refusals", errors.Join(&diff.ObjectError{Ref: ref, Err: invalid}, &diff.ObjectError{Ref: ref, Err: invalid}), true},
		{"dry-run cut short", &diff.ObjectError{Ref: ref, Err: fmt.Errorf("server-side dry-run: %w", context.Canceled)}, false},
		{"network", &diff.ObjectError{Ref: ref, Err: &url.Error{Op: "Patch", URL: "https://x", Err: errors.New("connection refused")}}, false},
		{"server busy", &diff.ObjectError{Ref: ref, Err: apierrors.NewTooManyRequests("busy", 1)}, false},
		{"plain error", errors.New("list namespaces: boom"), false},
		{"commit no trusted key signed", &source.Error{URL: "https://git.example.com/shop.git", Op: "verify signature", Kind: source.ErrUnverified, Detail: "commit c2 is not signed"}, true},
		{"Git host down", &source.Error{URL: "https://git.example.com/shop.git", Op: "list refs", Kind: source.ErrTransport}, false},
		{"empty render that would prune everything", fmt.Errorf("app shop: %w, but 3 objects…", apply.ErrEmptyRender), true},
		{"schema typing (a 500)", &diff.ObjectError{Ref: ref, Err: apierrors.NewInternalError(errors.New("failed to create typed patch object (a/b): .spec.replicas: expected numeric"))}, true},
		{"etcd timeout (a 500)", &diff.ObjectError{Ref: ref, Err: apierrors.NewInternalError(errors.New("etcdserver: request timed out"))}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := IsBadCommit(tc.err); got != tc.want {
				t.Errorf("IsBadCommit(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
