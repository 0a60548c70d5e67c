package reconcile

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/story"
	"github.com/refit-gitops/refit/test/gitserver"
)

func TestDecidePass(t *testing.T) {
	tests := []struct {
		name string
		f    passFacts
		want passAction
	}{
		{name: "first commit", f: passFacts{commit: "c1"}, want: passNewCommit},
		{name: "a new commit", f: passFacts{commit: "c2", applied: "c1"}, want: passNewCommit},
		{name: "a new commit after a failed one", f: passFacts{commit: "c3", applied: "c1", failed: "c2"}, want: passNewCommit},
		{name: "the applied commit, no drift pass due", f: passFacts{commit: "c1", applied: "c1"}, want: passIdle},
		{name: "the applied commit, drift pass due", f: passFacts{commit: "c1", applied: "c1", driftDue: true}, want: passDrift},
		{name: "the failed commit: no drift pass", f: passFacts{commit: "c2", applied: "c1", failed: "c2", driftDue: true}, want: passIdle},
		{name: "the remembered bad commit, first seen by this run", f: passFacts{commit: "c2", failed: "c2", announce: true}, want: passAnnounce},
		{name: "a new commit while a remembered one waits to be told", f: passFacts{commit: "c3", failed: "c2", announce: true}, want: passNewCommit},
		{name: "a refused commit", f: passFacts{commit: "c2", applied: "c1", refused: true}, want: passRefuse},
		{name: "the refused commit again", f: passFacts{commit: "c2", applied: "c1", failed: "c2", refused: true}, want: passRefused},
		{name: "the refused commit remembered from an earlier run", f: passFacts{commit: "c2", failed: "c2", announce: true, refused: true}, want: passRefuse},
		{name: "a poll error", f: passFacts{applied: "c1", pollErr: "git x: fetch: not found"}, want: passPollFailed},
		{name: "a poll error before the first sync", f: passFacts{pollErr: "git x: fetch: not found"}, want: passPollFailed},
		{name: "the same poll error again", f: passFacts{applied: "c1", pollErr: "git x: fetch: not found", shown: "git x: fetch: not found"}, want: passPollFailing},
		{name: "a different poll error", f: passFacts{applied: "c1", pollErr: "git x: fetch: timed out", shown: "git x: fetch: not found"}, want: passPollFailed},
		{name: "a good poll after failures, nothing new", f: passFacts{commit: "c1", applied: "c1", shown: "git x: fetch: not found"}, want: passRecovered},
		{name: "a good poll after failures, at the failed commit", f: passFacts{commit: "c2", applied: "c1", failed: "c2", shown: "git x: fetch: not found"}, want: passRecovered},
		{name: "a good poll after failures, at the refused commit", f: passFacts{commit: "c2", applied: "c1", failed: "c2", refused: true, shown: "git x: fetch: not found"}, want: passRecovered},
		{name: "a good poll after failures finds a new commit", f: passFacts{commit: "c2", applied: "c1", shown: "git x: fetch: not found"}, want: passNewCommit},
		{name: "a good poll after failures, drift pass due", f: passFacts{commit: "c1", applied: "c1", driftDue: true, shown: "git x: fetch: not found"}, want: passDrift},
		{name: "a good poll after failures finds a commit to refuse", f: passFacts{commit: "c3", applied: "c1", failed: "c2", refused: true, shown: "git x: fetch: not found"}, want: passRefuse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := decidePass(tc.f); got != tc.want {
				t.Errorf("decidePass(%+v) = %s, want %s", tc.f, got, tc.want)
			}
		})
	}
}

// writeLog records every write an app loop makes, and whether the App's
// lock was held at the time.
type writeLog struct {
	mu     sync.Mutex
	held   bool
	writes []string
}

func (w *writeLog) add(what string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.held {
		what += " (unlocked)"
	}
	w.writes = append(w.writes, what)
}

func (w *writeLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	got := w.writes
	w.writes = nil
	return got
}

// lock is an App.Lock that grants the lock when free is true.
func (w *writeLog) lock(free *bool) func(ctx context.Context) (context.Context, func(), bool) {
	return func(ctx context.Context) (context.Context, func(), bool) {
		if !*free {
			return nil, nil, false
		}
		w.mu.Lock()
		w.held = true
		w.mu.Unlock()
		return ctx, func() { w.mu.Lock(); w.held = false; w.mu.Unlock() }, true
	}
}

func (w *writeLog) Report(_ context.Context, commit string, state CommitState, _ string) error {
	w.add("commit status " + commit + " " + string(state))
	return nil
}

func (w *writeLog) Observe(_ context.Context, p Pass) { w.add("app status " + string(p.Phase)) }

func (w *writeLog) Emit(e story.Event) { w.add("event " + string(e.Kind)) }

func (w *writeLog) Memory(context.Context, string) (apply.Memory, error) { return apply.Memory{}, nil }

func (w *writeLog) SaveMemory(context.Context, string, apply.Memory) error {
	w.add("memory")
	return nil
}

func (w *writeLog) Plan(context.Context, string, Options) (*diff.Plan, error) {
	w.add("plan")
	return &diff.Plan{}, nil
}

func (w *writeLog) Apply(context.Context, *diff.Plan, Options) (*Result, error) {
	w.add("apply")
	return &Result{Apply: &apply.Result{}}, nil
}

// recalled is a memoryStore holding one memory, whose saves go to a
// writeLog.
type recalled struct {
	*writeLog
	m apply.Memory
}

func (r recalled) Memory(context.Context, string) (apply.Memory, error) { return r.m, nil }

// TestPassWritesOnlyUnderLock runs the passes that write for an App (a
// new commit, a drift pass, a refused commit, a bad commit remembered
// from an earlier run, a crash remembered, a poll error shown, the last
// pass shown again once polls work again) while another replica holds
// the App's lock: they write nothing and poll again soon. Once the lock
// is this replica's, every write happens under it. A pass with nothing
// to write takes no lock at all.
func TestPassWritesOnlyUnderLock(t *testing.T) {
	unsigned := &source.Error{URL: "https://git.example.com/shop.git", Op: "verify signature", Kind: source.ErrUnverified, Detail: "commit c2 is not signed"}
	long := time.Now().Add(-time.Hour)
	unreachable := &source.Error{URL: "https://git.example.com/shop.git", Op: "fetch", Kind: source.ErrTransport, Detail: "connection refused"}
	tests := []struct {
		name     string
		commit   string
		pollErr  error
		st       appState
		memory   apply.Memory // in the cluster when the loop starts
		want     []string     // the writes once the lock is free
		wantWait time.Duration
	}{
		{name: "new commit", commit: "c1", want: []string{"event SyncStarted", "commit status c1 pending", "app status progressing",
			"memory", "plan", "apply", "memory", "event SyncEnded", "app status success", "commit status c1 success"}},
		{name: "drift pass", commit: "c1", st: appState{applied: "c1", lastSync: long},
			want: []string{"plan", "apply", "app status success", "commit status c1 success"}},
		{name: "refused commit", commit: "c2", pollErr: unsigned, st: appState{applied: "c1", lastSync: time.Now()},
			want: []string{"commit status c2 failure", "app status bad-commit"}},
		{name: "bad commit remembered", commit: "c2", memory: apply.Memory{Bad: "c2", Reason: "bad indentation", Outcome: string(outcomeBadCommit)},
			want: []string{"commit status c2 failure", "app status bad-commit"}},
		{name: "crash remembered", commit: "c2", memory: apply.Memory{Attempt: "c2", Attempts: crashLimit},
			want: []string{"memory", "commit status c2 failure", "app status bad-commit"}},
		{name: "poll failed", pollErr: unreachable, st: appState{applied: "c1", lastSync: time.Now()},
			want: []string{"app status git-failed"}},
		{name: "poll failed before the first sync", pollErr: unreachable, want: []string{"app status git-failed"}},
		{name: "poll works again", commit: "c1", st: appState{applied: "c1", lastSync: time.Now(), pollErr: unreachable.Error(),
			last: &Pass{Revision: source.Revision{Commit: "c1"}, Phase: PhaseSuccess}},
			want: []string{"app status success"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &writeLog{}
			r := &remote{}
			r.set(tc.commit, tc.pollErr)
			if tc.pollErr != nil && tc.commit != "" {
				// A refused commit comes with its Revision, without a tree.
				r.set(tc.commit, fmt.Errorf("%s: %w", tc.commit, tc.pollErr))
			}
			free := false
			opts := DefaultOptions()
			opts.Story = w
			l := &appLoop{app: App{Name: "shop", Poller: refusedPoller{r}, Interval: time.Minute, DriftInterval: 10 * time.Minute,
				Status: w, Observer: w, Options: opts, Lock: w.lock(&free)},
				pipe: w, mem: recalled{w, tc.memory}, now: time.Now, st: tc.st}
			l.recall(t.Context())
			for range 2 {
				if wait := l.pass(t.Context()); wait != lockRetry {
					t.Errorf("lock held elsewhere: next poll in %s, want %s", wait, lockRetry)
				}
			}
			if got := w.take(); len(got) != 0 {
				t.Fatalf("lock held elsewhere: wrote %q, want nothing", got)
			}
			free = true
			l.pass(t.Context())
			if d := cmp.Diff(tc.want, w.take()); d != "" {
				t.Errorf("writes with the lock free (-want +got):\n%s", d)
			}
			// Nothing new now: the next pass writes nothing and takes no lock.
			free = false
			if wait := l.pass(t.Context()); wait == lockRetry {
				t.Errorf("a pass with nothing to write asked for the lock")
			}
			if got := w.take(); len(got) != 0 {
				t.Errorf("a pass with nothing to write wrote %q", got)
			}
		})
	}
}

// refusedPoller gives a refused commit its Revision, as source.Poller
// does (remote returns none with an error).
type refusedPoller struct{ r *remote }

func (p refusedPoller) Poll(ctx context.Context) (source.Revision, error) {
	rev, err := p.r.Poll(ctx)
	if err != nil {
		rev.Dir = ""
		if !strings.Contains(err.Error(), rev.Commit) {
			return source.Revision{}, err
		}
	}
	return rev, err
}

// TestUnchangedSkipUnderLock: the "unchanged" skip of a commit that
// touches nothing the app reads reports itself (status, event), so it
// too waits for the App's lock; until then it writes nothing and the
// commit stays to be skipped.
func TestUnchangedSkipUnderLock(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	repo.Commit(map[string]string{"apps/a/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n", "README.md": "hello\n"}, "first")
	hub := source.NewHub(t.TempDir())
	ctx, cancel := context.WithCancel(t.Context())
	hubDone := make(chan struct{})
	go func() { hub.Run(ctx); close(hubDone) }()
	defer func() { cancel(); <-hubDone }()
	opts := source.DefaultOptions()
	opts.URL, opts.Ref, opts.Auth = repo.HTTPURL(), source.Ref{Branch: "main"}, source.Auth{Username: srv.Username(), Password: srv.Password()}
	sub, err := hub.Subscribe(opts, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	w := &writeLog{}
	free := true
	o := DefaultOptions()
	o.App, o.Path, o.Story = "a", "apps/a", w
	l := &appLoop{app: App{Name: "a", Poller: sub, Interval: time.Hour, DriftInterval: time.Hour, Status: w, Observer: w, Options: o,
		Lock: w.lock(&free)}, pipe: &renderPipe{}, now: time.Now}
	l.pass(ctx)
	first := l.st.applied
	if first == "" || l.st.inputs == nil {
		t.Fatalf("first commit: applied %q, inputs %v; want applied with its inputs", first, l.st.inputs)
	}
	w.take()
	select {
	case <-sub.Changed().C(): // the first commit's
	default:
	}
	second := repo.Commit(map[string]string{"README.md": "bye\n"}, "readme")
	sub.Wake().Fire()
	select {
	case <-sub.Changed().C():
	case <-time.After(10 * time.Second):
		t.Fatal("the hub did not see the second commit")
	}
	free = false
	if wait := l.pass(ctx); wait != lockRetry || l.st.applied != first {
		t.Errorf("lock held elsewhere: next poll in %s, applied %s; want %s, still %s", wait, short(l.st.applied), lockRetry, short(first))
	}
	if got := w.take(); len(got) != 0 {
		t.Fatalf("lock held elsewhere: wrote %q, want nothing", got)
	}
	free = true
	l.pass(ctx)
	want := []string{"event SyncEnded", "app status unchanged"}
	if d := cmp.Diff(want, w.take()); d != "" || l.st.applied != second {
		t.Errorf("lock free: applied %s, want %s; writes (-want +got):\n%s", short(l.st.applied), short(second), d)
	}
}
