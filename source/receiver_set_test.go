package source_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
)

// deliver posts a GitHub push of repo to path, signed with secret, and
// returns the status.
func deliver(t *testing.T, recv *source.Receiver, path, secret, repo string) int {
	t.Helper()
	body := `{"repository":{"clone_url":"` + repo + `"}}`
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign(secret, body))
	rec := httptest.NewRecorder()
	recv.ServeHTTP(rec, req)
	return rec.Code
}

// Hooks come and go with their apps: Set adds, replaces and removes an
// owner's hooks while the Receiver serves, and an invalid hook changes
// nothing.
func TestReceiverSet(t *testing.T) {
	const repo, secret, other = "https://git.example.com/acme/shop.git", "first-secret-0123456789", "second-secret-0123456789"
	recv, err := source.NewReceiver(source.DefaultReceiverOptions())
	if err != nil {
		t.Fatal(err)
	}
	tr := source.NewTrigger()
	hook := source.Hook{Path: "/hook/team/shop", Provider: source.GitHub, Secret: secret, RepoURL: repo, Trigger: tr}
	steps := []struct {
		name       string
		set        []source.Hook // nil: remove
		setErr     bool
		secret     string
		wantStatus int
		wantFired  bool
	}{
		{"before any hook", nil, false, secret, http.StatusNotFound, false},
		{"added", []source.Hook{hook}, false, secret, http.StatusAccepted, true},
		{"a bad signature", []source.Hook{hook}, false, other, http.StatusForbidden, false},
		{"replaced by a new secret", []source.Hook{withSecret(hook, other)}, false, other, http.StatusAccepted, true},
		{"the old secret no longer", []source.Hook{withSecret(hook, other)}, false, secret, http.StatusForbidden, false},
		{"an invalid hook changes nothing", []source.Hook{withSecret(hook, "short")}, true, other, http.StatusAccepted, true},
		{"removed", nil, false, other, http.StatusNotFound, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := recv.Set("team/shop", st.set...)
			if (err != nil) != st.setErr {
				t.Fatalf("Set: %v, want error %v", err, st.setErr)
			}
			if got := deliver(t, recv, hook.Path, st.secret, repo); got != st.wantStatus {
				t.Errorf("status = %d, want %d", got, st.wantStatus)
			}
			if got := pending(tr); got != st.wantFired {
				t.Errorf("fired = %v, want %v", got, st.wantFired)
			}
		})
	}
}

func withSecret(h source.Hook, secret string) source.Hook {
	h.Secret = secret
	return h
}

// A rotated secret takes effect at the first delivery signed with it: the
// Receiver reloads the secret when a credential does not match, at most
// once every ReloadEvery, so a flood of bad signatures costs one read.
func TestReceiverReloadsARotatedSecret(t *testing.T) {
	const repo = "https://git.example.com/acme/shop.git"
	var current atomic.Value
	current.Store("old-secret-0123456789")
	var reloads atomic.Int32
	reload := func(context.Context) (string, error) {
		reloads.Add(1)
		return current.Load().(string), nil
	}
	opts := source.DefaultReceiverOptions()
	opts.ReloadEvery = 200 * time.Millisecond
	recv, err := source.NewReceiver(opts)
	if err != nil {
		t.Fatal(err)
	}
	tr := source.NewTrigger()
	hook := source.Hook{Path: "/hook/team/shop", Provider: source.GitHub, Secret: "old-secret-0123456789", RepoURL: repo, Trigger: tr, Reload: reload}
	if err := recv.Set("team/shop", hook); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if got := deliver(t, recv, hook.Path, "forged-secret-0123456789", repo); got != http.StatusForbidden {
			t.Fatalf("forged: status %d, want 403", got)
		}
	}
	if pending(tr) {
		t.Error("a forged delivery fired the hook")
	}
	if n := reloads.Load(); n != 1 {
		t.Errorf("reloads after 5 bad signatures = %d, want 1", n)
	}
	current.Store("new-secret-0123456789")
	time.Sleep(opts.ReloadEvery) // the next reload is allowed now
	if got := deliver(t, recv, hook.Path, "new-secret-0123456789", repo); got != http.StatusAccepted {
		t.Fatalf("rotated: status %d, want 202", got)
	}
	if !pending(tr) {
		t.Error("a delivery signed with the rotated secret fired nothing")
	}
	// The new secret is kept: no reload needed; the old one is refused.
	if got := deliver(t, recv, hook.Path, "new-secret-0123456789", repo); got != http.StatusAccepted {
		t.Errorf("again: status %d, want 202", got)
	}
	if got := deliver(t, recv, hook.Path, "old-secret-0123456789", repo); got != http.StatusForbidden {
		t.Errorf("old secret: status %d, want 403", got)
	}
	// A reload that fails keeps the secret refit has.
	time.Sleep(opts.ReloadEvery)
	failing := hook
	failing.Secret = "new-secret-0123456789"
	failing.Reload = func(context.Context) (string, error) { return "", errors.New("secret gone") }
	if err := recv.Set("team/shop", failing); err != nil {
		t.Fatal(err)
	}
	_ = deliver(t, recv, hook.Path, "forged-secret-0123456789", repo)
	if got := deliver(t, recv, hook.Path, "new-secret-0123456789", repo); got != http.StatusAccepted {
		t.Errorf("after a failed reload: status %d, want 202", got)
	}
}
