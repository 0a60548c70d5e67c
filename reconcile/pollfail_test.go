package reconcile

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/source"
)

// heard takes what obs heard since the last call, as "phase commit:
// message".
func heard(obs *passes) []string {
	obs.mu.Lock()
	defer obs.mu.Unlock()
	var got []string
	for _, p := range obs.got {
		got = append(got, string(p.Phase)+" "+p.Revision.Commit+": "+p.Message)
	}
	obs.got = nil
	return got
}

// pollStep is one pass of a loop whose polls fail and recover.
type pollStep struct {
	name     string
	commit   string
	pollErr  error
	want     []string // what the Observer hears
	wantSync bool
	wantWait time.Duration
}

func runPollSteps(t *testing.T, steps []pollStep) {
	t.Helper()
	const interval = time.Minute
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e := &env{remote: &remote{}, trigger: source.NewTrigger()}
	p := &pipe{env: e}
	obs := &passes{}
	l := &appLoop{
		app:  App{Name: "shop", Poller: e.remote, Trigger: e.trigger, Interval: interval, DriftInterval: time.Hour, Observer: obs},
		pipe: p, now: func() time.Time { return clock },
	}
	for i, s := range steps {
		clock = clock.Add(time.Second)
		e.remote.set(s.commit, s.pollErr)
		before := p.synced
		wait := l.pass(t.Context())
		if d := cmp.Diff(s.want, heard(obs)); d != "" {
			t.Errorf("step %d (%s): the Observer heard (-want +got):\n%s", i, s.name, d)
		}
		if synced := p.synced > before; synced != s.wantSync {
			t.Errorf("step %d (%s): synced %v, want %v", i, s.name, synced, s.wantSync)
		}
		if wait != s.wantWait {
			t.Errorf("step %d (%s): next poll in %s, want %s", i, s.name, wait, s.wantWait)
		}
	}
}

// A failed poll is shown once per distinct error, the retries between
// write nothing, and the first good poll shows the last pass again even
// though no commit moved. A credential in the error never reaches the
// Observer.
func TestPollErrorShownOnceThenCleared(t *testing.T) {
	gone := &source.Error{URL: "https://git.example.com/shop.git", Ref: "main", Op: "fetch", Kind: source.ErrNotFound, Detail: "repository not found"}
	leaky := errors.New("fetch https://bot:s3cret@git.example.com/shop.git: connection refused")
	const goneMsg = "git https://git.example.com/shop.git (main): fetch: not found: repository not found"
	runPollSteps(t, []pollStep{
		{name: "first commit", commit: "c1", wantSync: true, wantWait: time.Minute,
			want: []string{"progressing c1: ", "success c1: applied and healthy"}},
		{name: "repository gone", pollErr: gone, wantWait: time.Second, want: []string{"git-failed c1: " + goneMsg}},
		{name: "still gone", pollErr: gone, wantWait: 2 * time.Second},
		{name: "still gone", pollErr: gone, wantWait: 4 * time.Second},
		{name: "another error", pollErr: leaky, wantWait: 8 * time.Second,
			want: []string{"git-failed c1: fetch https://git.example.com/shop.git: connection refused"}},
		{name: "that error again", pollErr: leaky, wantWait: 16 * time.Second},
		{name: "reachable again, no new commit", commit: "c1", wantWait: time.Minute,
			want: []string{"success c1: applied and healthy"}},
		{name: "nothing new", commit: "c1", wantWait: time.Minute},
		{name: "gone again", pollErr: gone, wantWait: time.Second, want: []string{"git-failed c1: " + goneMsg}},
		{name: "reachable again with a new commit", commit: "c2", wantSync: true, wantWait: time.Minute,
			want: []string{"progressing c2: ", "success c2: applied and healthy"}},
	})
}

// A poll that fails before the first sync is shown too (no revision
// yet); the first good poll syncs.
func TestPollErrorBeforeFirstSync(t *testing.T) {
	denied := &source.Error{URL: "https://git.example.com/shop.git", Ref: "main", Op: "list refs", Kind: source.ErrAuth}
	runPollSteps(t, []pollStep{
		{name: "credentials refused", pollErr: denied, wantWait: time.Second,
			want: []string{"git-failed : git https://git.example.com/shop.git (main): list refs: authentication failed"}},
		{name: "still refused", pollErr: denied, wantWait: 2 * time.Second},
		{name: "accepted", commit: "c1", wantSync: true, wantWait: time.Minute,
			want: []string{"progressing c1: ", "success c1: applied and healthy"}},
		{name: "nothing new", commit: "c1", wantWait: time.Minute},
	})
}

// A loop being stopped mid-poll shows no Git failure.
func TestPollCancelledShowsNothing(t *testing.T) {
	obs := &passes{}
	r := &remote{}
	r.set("", context.Canceled)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	l := &appLoop{app: App{Name: "shop", Poller: r, Interval: time.Minute, DriftInterval: time.Hour, Observer: obs}, pipe: &pipe{}, now: time.Now}
	l.pass(ctx)
	if got := heard(obs); len(got) != 0 {
		t.Errorf("stopped loop: the Observer heard %q, want nothing", got)
	}
}

func TestPollFailureRedacts(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"https user and token", "fetch https://bot:s3cret@git.example.com/x.git: refused", "fetch https://git.example.com/x.git: refused"},
		{"token alone", "GET HTTPS://ghp_abc@github.com/x: 401", "GET HTTPS://github.com/x: 401"},
		{"ssh password", "ssh://git:pw@host:22/x: refused", "ssh://git@host:22/x: refused"}, // an SSH user is no secret
		{"no userinfo", "git https://git.example.com/x.git (main): fetch: timed out", "git https://git.example.com/x.git (main): fetch: timed out"},
		{"an address in the detail", "mail admin@example.com", "mail admin@example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := pollFailure(errors.New(tc.in))
			if got != tc.want {
				t.Errorf("pollFailure(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, "s3cret") || strings.Contains(got, "ghp_") || strings.Contains(got, ":pw@") {
				t.Errorf("pollFailure(%q) = %q keeps a credential", tc.in, got)
			}
		})
	}
}

// The Observer hears the failed poll's error itself, so that it can tell
// refused credentials or host keys from an unreachable host.
func TestPollErrorCarriesItsKind(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		kind error
	}{
		{"credentials refused", &source.Error{URL: "https://git.example.com/shop.git", Op: "list refs", Kind: source.ErrAuth}, source.ErrAuth},
		{"host key refused", &source.Error{URL: "ssh://git.example.com/shop.git", Op: "list refs", Kind: source.ErrHostKey}, source.ErrHostKey},
		{"host unreachable", &source.Error{URL: "https://git.example.com/shop.git", Op: "list refs", Kind: source.ErrTransport}, source.ErrTransport},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obs := &passes{}
			r := &remote{}
			r.set("", tc.err)
			l := &appLoop{app: App{Name: "shop", Poller: r, Interval: time.Minute, DriftInterval: time.Hour, Observer: obs}, pipe: &pipe{}, now: time.Now}
			l.pass(t.Context())
			got := obs.all()
			if len(got) != 1 || got[0].Phase != PhaseGitFailed {
				t.Fatalf("the Observer heard %+v, want one %s pass", got, PhaseGitFailed)
			}
			if !errors.Is(got[0].Err, tc.kind) {
				t.Errorf("Pass.Err = %v, want an error of kind %v", got[0].Err, tc.kind)
			}
		})
	}
}
