package main

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/source"
)

func TestDecide(t *testing.T) {
	now := metav1.Now()
	app := func(gen int64, at string, suspend bool, deleted bool) *v1alpha1.App {
		a := &v1alpha1.App{ObjectMeta: metav1.ObjectMeta{Generation: gen}}
		if at != "" {
			a.Annotations = map[string]string{reconcileAtAnnotation: at}
		}
		a.Spec.Suspend = suspend
		if deleted {
			a.DeletionTimestamp = &now
		}
		return a
	}
	running := &runningApp{gen: 2, at: "t1"}
	rotated := &runningApp{gen: 2, at: "t1"}
	rotated.rotated.Store(true)
	for _, tc := range []struct {
		name    string
		obj     *v1alpha1.App
		r       *runningApp
		want    action
		notOurs bool
	}{
		{"new App starts", app(1, "", false, false), nil, actStart, false},
		{"same generation and request: keep", app(2, "t1", false, false), running, actKeep, false},
		{"new generation restarts", app(3, "t1", false, false), running, actStart, false},
		{"new reconcile-at restarts", app(2, "t2", false, false), running, actStart, false},
		{"reconcile-at removed restarts", app(2, "", false, false), running, actStart, false},
		{"rotated credentials restart, same generation", app(2, "t1", false, false), rotated, actStart, false},
		{"suspended stops", app(2, "t1", true, false), running, actSuspend, false},
		{"suspended, not running", app(2, "t1", true, false), nil, actSuspend, false},
		{"deleted finalizes, even suspended", app(2, "t1", true, true), running, actFinalize, false},
		{"deleted, not running", app(2, "", false, true), nil, actFinalize, false},
		{"another replica's: stop, nothing else", app(2, "t1", false, false), running, actRelinquish, true},
		{"another replica's, new: not started", app(1, "", false, false), nil, actRelinquish, true},
		{"another replica's, suspended: no status written", app(2, "t1", true, false), running, actRelinquish, true},
		{"another replica's, deleted: its owner prunes", app(2, "t1", false, true), running, actRelinquish, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decide(tc.obj, tc.r, !tc.notOurs); got != tc.want {
				t.Errorf("decide = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		phase reconcile.Phase
		want  v1alpha1.Outcome
		warn  bool
	}{
		{reconcile.PhaseProgressing, v1alpha1.Progressing, false},
		{reconcile.PhaseSuccess, v1alpha1.Succeeded, false},
		{reconcile.PhaseUnchanged, v1alpha1.Unchanged, false},
		{reconcile.PhaseUnhealthy, v1alpha1.Unhealthy, true},
		{reconcile.PhaseRolloutFailed, v1alpha1.RolloutFailed, true},
		{reconcile.PhaseBadCommit, v1alpha1.BadCommit, true},
		{reconcile.PhaseTransient, v1alpha1.Retrying, true},
		{reconcile.PhaseGitFailed, v1alpha1.GitOperationFailed, true},
	} {
		t.Run(string(tc.phase), func(t *testing.T) {
			got, warn := outcomeOf(tc.phase)
			if got != tc.want || warn != tc.warn {
				t.Errorf("outcomeOf(%s) = %s, %v; want %s, %v", tc.phase, got, warn, tc.want, tc.warn)
			}
		})
	}
}

func TestRevisionString(t *testing.T) {
	sha := "0123456789abcdef0123456789abcdef01234567"
	for _, tc := range []struct {
		name string
		rev  source.Revision
		want string
	}{
		{"branch", source.Revision{Ref: "refs/heads/main", Commit: sha}, "main@sha1:" + sha},
		{"tag", source.Revision{Ref: "refs/tags/v1.2.0", Commit: sha}, "v1.2.0@sha1:" + sha},
		{"pinned commit", source.Revision{Commit: sha}, "sha1:" + sha},
		{"none yet", source.Revision{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := revisionString(tc.rev); got != tc.want {
				t.Errorf("revisionString = %q, want %q", got, tc.want)
			}
		})
	}
}
