package main

import (
	"errors"
	"net/http"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/api/v1alpha1"
)

func TestRouteHook(t *testing.T) {
	app := func(edit func(a *v1alpha1.App)) *v1alpha1.App {
		a := &v1alpha1.App{Spec: v1alpha1.AppSpec{Webhook: &v1alpha1.Webhook{Provider: "gitea"}}}
		if edit != nil {
			edit(a)
		}
		return a
	}
	now := metav1.Now()
	tests := []struct {
		name  string
		obj   *v1alpha1.App
		owned bool
		want  hookRoute
	}{
		{"owned: its poller is woken here", app(nil), true, routeLocal},
		{"another replica's: the owner is asked", app(nil), false, routeRemote},
		{"no such App: 404 here", nil, false, routeLocal},
		{"no webhook: 404 as the owner would", app(func(a *v1alpha1.App) { a.Spec.Webhook = nil }), false, routeLocal},
		{"suspended: the owner serves no hook", app(func(a *v1alpha1.App) { a.Spec.Suspend = true }), false, routeLocal},
		{"being deleted: nothing to poll", app(func(a *v1alpha1.App) { a.DeletionTimestamp = &now }), false, routeLocal},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := routeHook(tc.obj, tc.owned); got != tc.want {
				t.Errorf("routeHook = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRemoteAnswer(t *testing.T) {
	tests := []struct {
		name      string
		verified  int
		patchErr  error
		want      int
		annotated bool
	}{
		{"signed, for the App's repository: the owner is asked", http.StatusAccepted, nil, http.StatusAccepted, true},
		{"asking failed: the sender retries", http.StatusAccepted, errors.New("conflict"), http.StatusServiceUnavailable, true},
		{"bad signature: refused, nothing written", http.StatusForbidden, nil, http.StatusForbidden, false},
		{"no signature: refused, nothing written", http.StatusUnauthorized, nil, http.StatusUnauthorized, false},
		{"malformed: refused, nothing written", http.StatusBadRequest, nil, http.StatusBadRequest, false},
		{"another repository, a ping or a replay: answered, nothing written", http.StatusOK, nil, http.StatusOK, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			annotated := false
			got, _ := remoteAnswer(tc.verified, func() error { annotated = true; return tc.patchErr })
			if got != tc.want || annotated != tc.annotated {
				t.Errorf("remoteAnswer(%d) = %d, annotated %v; want %d, annotated %v", tc.verified, got, annotated, tc.want, tc.annotated)
			}
		})
	}
}

func TestAppKeyOfPath(t *testing.T) {
	tests := []struct {
		path string
		want string
		ok   bool
	}{
		{"/hook/team/web", "team/web", true},
		{"/hook/web", "", false}, // a config file's app
		{"/hook/team/", "", false},
		{"/hook//web", "", false},
		{"/hook/team/web/x", "", false},
		{"/metrics", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			got, ok := appKeyOfPath(tc.path)
			if got != tc.want || ok != tc.ok {
				t.Errorf("appKeyOfPath(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestPollAsked(t *testing.T) {
	tests := []struct {
		name, handled, now string
		want               bool
	}{
		{"never asked", "", "", false},
		{"a first request", "", "2026-12-01T01:00:00Z", true},
		{"handled already (or set before the loop started)", "2026-12-01T01:00:00Z", "2026-12-01T01:00:00Z", false},
		{"a new request", "2026-12-01T01:00:00Z", "2026-12-01T01:00:05Z", true},
		{"removed: nothing to do", "2026-12-01T01:00:00Z", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := pollAsked(tc.handled, tc.now); got != tc.want {
				t.Errorf("pollAsked(%q, %q) = %v, want %v", tc.handled, tc.now, got, tc.want)
			}
		})
	}
}
