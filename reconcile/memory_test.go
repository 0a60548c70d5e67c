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
	"github.com/refit-gitops/refit/source"
)

// store is a memoryStore kept in a map: what the cluster would hold.
type store struct {
	mu    sync.Mutex
	m     map[string]apply.Memory
	saves int
}

func (s *store) Memory(_ context.Context, app string) (apply.Memory, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[app], nil
}

func (s *store) SaveMemory(_ context.Context, app string, m apply.Memory) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[app] = m
	s.saves++
	return nil
}

func (s *store) get(app string) apply.Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[app]
}

var _ memoryStore = (*store)(nil)

// A commit that refit started crashLimit times without finishing is bad:
// each start is counted before anything is applied, a finished sync
// (whatever its outcome) ends the attempt.
func TestMemoryDecisions(t *testing.T) {
	m := apply.Memory{}
	for i := 1; i <= crashLimit; i++ {
		m = beginAttempt(m, "c1") // refit dies during each sync
		if _, failed, _ := recallMemory(m, crashLimit); failed != "" && i < crashLimit {
			t.Fatalf("after %d starts: %s not retried, want it retried until %d", i, failed, crashLimit)
		}
	}
	next, failed, crashed := recallMemory(m, crashLimit)
	if failed != "c1" || !crashed || next.Bad != "c1" || next.Attempt != "" || !strings.Contains(next.Reason, "stopped 3 times") {
		t.Fatalf("after %d starts: failed %q crashed %v memory %+v, want c1 bad with the reason and no attempt", crashLimit, failed, crashed, next)
	}
	for _, tc := range []struct {
		name   string
		before apply.Memory
		out    outcome
		want   apply.Memory
	}{
		{"success ends the attempt", apply.Memory{Attempt: "c2", Attempts: 2}, outcomeSuccess, apply.Memory{}},
		{"transient ends the attempt: refit did not crash", apply.Memory{Attempt: "c2", Attempts: 1}, outcomeTransient, apply.Memory{}},
		{"a bad commit is remembered", apply.Memory{Attempt: "c2", Attempts: 1}, outcomeBadCommit, apply.Memory{Bad: "c2", Reason: "why", Outcome: "bad-commit"}},
		{"a failed rollout is remembered", apply.Memory{Attempt: "c2", Attempts: 1, Bad: "c1", Reason: "old"}, outcomeRolloutFailed,
			apply.Memory{Bad: "c2", Reason: "why", Outcome: "rollout-failed"}},
		{"a good commit keeps the last bad one", apply.Memory{Attempt: "c2", Attempts: 1, Bad: "c1", Reason: "old"}, outcomeSuccess, apply.Memory{Bad: "c1", Reason: "old"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.want, finishAttempt(tc.before, "c2", tc.out, "why")); d != "" {
				t.Errorf("memory (-want +got):\n%s", d)
			}
		})
	}
	if _, failed, crashed := recallMemory(apply.Memory{Bad: "c1", Reason: "nothing applied"}, crashLimit); failed != "c1" || crashed {
		t.Errorf("a remembered bad commit: failed %q crashed %v, want c1, not newly crashed", failed, crashed)
	}
	if _, failed, _ := recallMemory(apply.Memory{Attempt: "c1", Attempts: 2, Bad: "c0"}, crashLimit); failed != "c0" {
		t.Errorf("an attempt under the limit: failed %q, want the last bad commit c0", failed)
	}
}

// The loop reads the memory when it starts and keeps it up to date: after a
// restart, a bad commit and a commit that crashed refit crashLimit times are
// not applied again; a new commit is.
func TestAppLoopMemorySurvivesRestart(t *testing.T) {
	const interval, drift = time.Minute, 10 * time.Minute
	start := func(s *store, commit string) (*appLoop, *pipe, *statuses, *remote) {
		e := &env{remote: &remote{commit: commit}, trigger: source.NewTrigger()}
		p := &pipe{env: e}
		st := &statuses{}
		l := &appLoop{app: App{Name: "shop", Poller: e.remote, Interval: interval, DriftInterval: drift, Status: st},
			pipe: p, mem: s, now: time.Now}
		l.recall(t.Context())
		return l, p, st, e.remote
	}

	t.Run("crashed three times", func(t *testing.T) {
		s := &store{m: map[string]apply.Memory{"shop": {Attempt: "c1", Attempts: crashLimit}}}
		l, p, st, r := start(s, "c1")
		l.pass(t.Context())
		if p.synced != 0 {
			t.Errorf("c1 synced %d times after a restart, want 0", p.synced)
		}
		got, desc := st.take()
		if d := cmp.Diff([]string{"c1 failure"}, got); d != "" || !strings.Contains(desc[0], "stopped 3 times") {
			t.Errorf("first pass: reports (-want +got):\n%s descriptions %q", d, desc)
		}
		l.pass(t.Context())
		if got, _ := st.take(); p.synced != 0 || len(got) != 0 {
			t.Errorf("second pass: synced %d, reports %q; want c1 left alone, reported once", p.synced, got)
		}
		if m := s.get("shop"); m.Bad != "c1" || m.Attempt != "" {
			t.Errorf("memory %+v, want c1 bad and no attempt", m)
		}
		r.set("c2", nil)
		var during apply.Memory
		p.apply = func(context.Context, *env) (*Result, error) {
			during = s.get("shop")
			return &Result{Apply: &apply.Result{}}, nil
		}
		l.pass(t.Context())
		if p.synced != 1 || during.Attempt != "c2" || during.Attempts != 1 {
			t.Errorf("c2: synced %d, memory while applying %+v, want one sync with the attempt recorded first", p.synced, during)
		}
		if m := s.get("shop"); m.Attempt != "" {
			t.Errorf("memory after c2 applied %+v, want no attempt", m)
		}
	})

	t.Run("crashed once: retried, counted", func(t *testing.T) {
		s := &store{m: map[string]apply.Memory{"shop": {Attempt: "c1", Attempts: 1}}}
		l, p, _, _ := start(s, "c1")
		var during apply.Memory
		p.apply = func(context.Context, *env) (*Result, error) {
			during = s.get("shop")
			return &Result{Apply: &apply.Result{}}, nil
		}
		l.pass(t.Context())
		if p.synced != 1 || during.Attempts != 2 {
			t.Errorf("synced %d, memory while applying %+v, want one sync counted as the second start", p.synced, during)
		}
	})

	t.Run("bad commit before the restart", func(t *testing.T) {
		s := &store{m: map[string]apply.Memory{}}
		l, p, _, _ := start(s, "c1")
		p.planErr = &BadCommitError{Err: errString("deploy/app.yaml: line 3: bad indentation")}
		l.pass(t.Context())
		if m := s.get("shop"); m.Bad != "c1" || !strings.Contains(m.Reason, "bad indentation") {
			t.Fatalf("memory %+v, want c1 bad with its reason", m)
		}
		l2, p2, st2, _ := start(s, "c1")
		l2.pass(t.Context())
		l2.pass(t.Context())
		got, desc := st2.take()
		if d := cmp.Diff([]string{"c1 failure"}, got); p2.synced != 0 || d != "" || !strings.Contains(desc[0], "bad indentation") {
			t.Errorf("after a restart: synced %d, reports (-want +got):\n%s descriptions %q; want c1 not applied, reported failed once with its reason", p2.synced, d, desc)
		}
		_ = l
	})
}

// A commit the poller refuses (unsigned) and the memory remembers is
// reported once after a restart, and never applied.
func TestAppLoopRemembersARefusedCommit(t *testing.T) {
	s := &store{m: map[string]apply.Memory{"shop": {Bad: "c1", Reason: "not signed", Outcome: string(outcomeBadCommit)}}}
	r := &remote{}
	r.set("c1", fmt.Errorf("c1: %w", source.ErrUnverified))
	st := &statuses{}
	p := &pipe{env: &env{remote: r}}
	l := &appLoop{app: App{Name: "shop", Poller: r, Interval: time.Minute, DriftInterval: time.Hour, Status: st}, pipe: p, mem: s, now: time.Now}
	l.recall(t.Context())
	l.pass(t.Context())
	l.pass(t.Context())
	if got, _ := st.take(); p.synced != 0 || len(got) != 1 || got[0] != "c1 failure" {
		t.Errorf("synced %d, reports %q; want c1 reported failed once, never applied", p.synced, got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// ctxStore refuses saves on a cancelled context, as the API client does.
type ctxStore struct{ store }

func (s *ctxStore) SaveMemory(ctx context.Context, app string, m apply.Memory) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.store.SaveMemory(ctx, app, m)
}

// TestRememberWhileStopping: the end of an attempt is saved even when the
// loop is being stopped (an App changed, deleted, a shutdown): left
// unfinished, the attempt would count as a crash.
func TestRememberWhileStopping(t *testing.T) {
	s := &ctxStore{store: store{m: map[string]apply.Memory{}}}
	l := &appLoop{app: App{Name: "shop"}, mem: s, now: time.Now}
	ctx, cancel := context.WithCancel(t.Context())
	l.remember(ctx, beginAttempt(l.st.memory, "c1"))
	cancel()
	l.remember(ctx, finishAttempt(l.st.memory, "c1", outcomeSuccess, ""))
	if got := s.get("shop"); got.Attempt != "" || got.Attempts != 0 {
		t.Errorf("memory after a stopped loop finished its attempt: %+v, want no attempt", got)
	}
}
