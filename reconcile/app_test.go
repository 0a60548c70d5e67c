package reconcile

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/source"
)

// remote is a Git ref whose commit a test moves.
type remote struct {
	mu     sync.Mutex
	commit string
	err    error
}

func (r *remote) Poll(context.Context) (source.Revision, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return source.Revision{Commit: r.commit, Dir: "/checkout/" + r.commit}, r.err
}

func (r *remote) set(commit string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commit, r.err = commit, err
}

// statuses records the commit states reported, as "commit state".
type statuses struct {
	mu   sync.Mutex
	got  []string
	desc []string
}

func (s *statuses) Report(_ context.Context, commit string, state CommitState, desc string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, commit+" "+string(state))
	s.desc = append(s.desc, desc)
	return nil
}

func (s *statuses) take() ([]string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	got, desc := s.got, s.desc
	s.got, s.desc = nil, nil
	return got, desc
}

// env is what a step's apply can reach: the remote and the webhook.
type env struct {
	remote  *remote
	trigger *source.Trigger
}

type applyFunc func(ctx context.Context, e *env) (*Result, error)

// pipe plans nothing and applies with the current step's function.
type pipe struct {
	env     *env
	planErr error
	apply   applyFunc
	synced  int
}

func (p *pipe) Plan(context.Context, string, Options) (*diff.Plan, error) {
	p.synced++
	if p.planErr != nil {
		return nil, p.planErr
	}
	return &diff.Plan{}, nil
}

func (p *pipe) Apply(ctx context.Context, _ *diff.Plan, _ Options) (*Result, error) {
	if p.apply == nil {
		return &Result{Apply: &apply.Result{}}, nil
	}
	return p.apply(ctx, p.env)
}

var _ pipeline = (*pipe)(nil)

func rollouts(outcomes ...inplace.Outcome) applyFunc {
	return func(context.Context, *env) (*Result, error) {
		res := &Result{Apply: &apply.Result{}}
		for _, o := range outcomes {
			ro := inplace.Result{Ref: diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"}, Outcome: o}
			if o == inplace.Failed {
				ro.FailedPod, ro.Reason, ro.RolledBack = "web-1", "container web: ImagePullBackOff", 2
			}
			res.Rollouts = append(res.Rollouts, ro)
		}
		return res, nil
	}
}

func unhealthy(outcomes ...inplace.Outcome) applyFunc {
	return func(ctx context.Context, e *env) (*Result, error) {
		res, _ := rollouts(outcomes...)(ctx, e)
		res.Apply.Health = apply.Unhealthy
		return res, &apply.HealthError{Objects: []apply.ObjectResult{{Ref: diff.Ref{Version: "v1", Kind: "Pod", Name: "x"}, Status: "Failed"}}}
	}
}

func transient(context.Context, *env) (*Result, error) {
	return nil, &url.Error{Op: "Patch", URL: "https://cluster", Err: errors.New("connection refused")}
}

// supersede moves the remote to c2 while the sync runs and sends a webhook,
// then waits to be cancelled, as a long rollout would.
func supersede(ctx context.Context, e *env) (*Result, error) {
	e.remote.set("c2", nil)
	e.trigger.Fire()
	<-ctx.Done()
	return &Result{}, ctx.Err()
}

// step is one pass of the loop.
type step struct {
	commit  string        // where the remote ref points
	pollErr error         // the remote is unreachable
	after   time.Duration // how far the clock moves before the pass
	planErr error
	apply   applyFunc // nil: applied and healthy

	wantSync    bool
	wantReports []string // "commit state", in order
	wantWait    time.Duration
	// wantDesc is a part of the last report's description.
	wantDesc string
}

func TestAppLoop(t *testing.T) {
	const interval, drift = time.Minute, 10 * time.Minute
	ok := func(commit string) step {
		return step{commit: commit, wantSync: true, wantReports: []string{commit + " pending", commit + " success"}, wantWait: interval}
	}
	idle := func(commit string, after, wait time.Duration) step {
		return step{commit: commit, after: after, wantWait: wait}
	}
	bad := &BadCommitError{Err: errors.New("deploy/app.yaml: line 3: bad indentation")}
	unsigned := &source.Error{URL: "https://git.example.com/shop.git", Op: "verify signature", Kind: source.ErrUnverified, Detail: "commit c2 is not signed"}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"new commit, then nothing new", []step{
			ok("c1"),
			idle("c1", interval, interval),
		}},
		{"drift pass when due, without a pending status", []step{
			ok("c1"),
			idle("c1", 9*time.Minute+30*time.Second, 30*time.Second),
			{commit: "c1", after: 30 * time.Second, wantSync: true, wantReports: []string{"c1 success"}, wantWait: interval},
		}},
		{"a failed rollout is a bad commit: no retry until a new commit", []step{
			{commit: "c1", apply: rollouts(inplace.Failed), wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: interval, wantDesc: "FAILED at Pod web-1"},
			idle("c1", interval, interval),
			idle("c1", drift, interval),
			idle("c1", time.Hour, interval),
			ok("c2"),
		}},
		{"a failed and rolled back rollout that also left the apply unhealthy is not retried", []step{
			{commit: "c1", apply: unhealthy(inplace.Failed), wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: interval, wantDesc: "2 Pods rolled back"},
			idle("c1", drift, interval),
			ok("c2"),
		}},
		{"one failed rollout among good ones fails the commit", []step{
			{commit: "c1", apply: rollouts(inplace.Succeeded, inplace.Failed), wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: interval},
			idle("c1", drift, interval),
		}},
		{"unhealthy: reported, looked at again by drift passes", []step{
			{commit: "c1", apply: unhealthy(), wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: interval, wantDesc: "unhealthy"},
			idle("c1", interval, interval),
			{commit: "c1", after: drift, wantSync: true, wantReports: []string{"c1 success"}, wantWait: interval},
		}},
		{"bad commit: not retried, the poll goes on at the interval", []step{
			{commit: "c1", planErr: bad, wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: interval, wantDesc: "bad indentation"},
			idle("c1", drift, interval),
			idle("c1", 2*drift, interval),
			ok("c2"),
		}},
		{"transient errors back off and retry", []step{
			{commit: "c1", apply: transient, wantSync: true, wantReports: []string{"c1 pending"}, wantWait: time.Second},
			{commit: "c1", after: time.Second, apply: transient, wantSync: true, wantReports: []string{"c1 pending"}, wantWait: 2 * time.Second},
			{commit: "c1", after: 2 * time.Second, apply: transient, wantSync: true, wantReports: []string{"c1 pending"}, wantWait: 4 * time.Second},
			ok("c1"),
		}},
		{"a rollout that found the in-place path closed is planned again soon", []step{
			{commit: "c1", apply: rollouts(inplace.Fallback), wantSync: true, wantReports: []string{"c1 pending"}, wantWait: time.Second},
			ok("c1"),
		}},
		{"a commit no trusted key signed is a bad commit: reported once, never synced", []step{
			ok("c1"),
			{commit: "c2", pollErr: unsigned, wantReports: []string{"c2 failure"}, wantWait: interval, wantDesc: "c2 is not signed"},
			{commit: "c2", pollErr: unsigned, after: interval, wantWait: interval},
			{commit: "c2", pollErr: unsigned, after: drift, wantWait: interval},
			ok("c3"),
		}},
		{"poll errors back off", []step{
			{pollErr: errors.New("git host down"), wantWait: time.Second},
			{pollErr: errors.New("git host down"), wantWait: 2 * time.Second},
			ok("c1"),
		}},
		{"a newer commit supersedes the running sync", []step{
			{commit: "c1", apply: supersede, wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: 0, wantDesc: "superseded by c2"},
			ok("c2"),
		}},
		{"a newer commit after a failed one", []step{
			{commit: "c1", apply: rollouts(inplace.Failed), wantSync: true, wantReports: []string{"c1 pending", "c1 failure"}, wantWait: interval},
			{commit: "c2", apply: rollouts(inplace.Failed), wantSync: true, wantReports: []string{"c2 pending", "c2 failure"}, wantWait: interval},
			idle("c2", drift, interval),
			ok("c3"),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			e := &env{remote: &remote{}, trigger: source.NewTrigger()}
			p := &pipe{env: e}
			st := &statuses{}
			l := &appLoop{
				app:  App{Name: "shop", Poller: e.remote, Trigger: e.trigger, Interval: interval, DriftInterval: drift, Status: st},
				pipe: p, now: func() time.Time { return clock },
			}
			for i, s := range tc.steps {
				clock = clock.Add(s.after)
				e.remote.set(s.commit, s.pollErr)
				p.planErr, p.apply = s.planErr, s.apply
				before := p.synced
				wait := l.pass(t.Context())
				got, desc := st.take()
				if synced := p.synced > before; synced != s.wantSync {
					t.Errorf("step %d (%s): synced %v, want %v", i, s.commit, synced, s.wantSync)
				}
				if d := cmp.Diff(s.wantReports, got); d != "" {
					t.Errorf("step %d (%s): reports (-want +got):\n%s", i, s.commit, d)
				}
				if wait != s.wantWait {
					t.Errorf("step %d (%s): next poll in %s, want %s", i, s.commit, wait, s.wantWait)
				}
				if s.wantDesc != "" && (len(desc) == 0 || !strings.Contains(desc[len(desc)-1], s.wantDesc)) {
					t.Errorf("step %d (%s): descriptions %q, want the last to say %q", i, s.commit, desc, s.wantDesc)
				}
			}
		})
	}
}

func TestClassifyOutcome(t *testing.T) {
	health := &apply.HealthError{Objects: []apply.ObjectResult{{Ref: diff.Ref{Version: "v1", Kind: "Pod", Name: "x"}}}}
	for _, tc := range []struct {
		name string
		err  error
		want outcome
	}{
		{"nothing", nil, outcomeSuccess},
		{"render error", &BadCommitError{Err: errors.New("bad yaml")}, outcomeBadCommit},
		{"rollout failed", rolloutFailure(&Result{Rollouts: []inplace.Result{{Outcome: inplace.Failed}}}, nil), outcomeRolloutFailed},
		{"rollout failed and unhealthy", rolloutFailure(&Result{Rollouts: []inplace.Result{{Outcome: inplace.Failed}}}, health), outcomeRolloutFailed},
		{"rollout fell back", rolloutFailure(&Result{Rollouts: []inplace.Result{{Outcome: inplace.Fallback}}}, nil), outcomeTransient},
		{"unhealthy", rolloutFailure(&Result{}, health), outcomeFailure},
		{"health error alone", health, outcomeFailure},
		{"network", &url.Error{Op: "Get", URL: "https://x", Err: errors.New("refused")}, outcomeTransient},
		{"cancelled", context.Canceled, outcomeTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify(tc.err); got != tc.want {
				t.Errorf("classify(%v) = %s, want %s", tc.err, got, tc.want)
			}
		})
	}
	if err := rolloutFailure(&Result{Apply: &apply.Result{}, Rollouts: []inplace.Result{{Outcome: inplace.Succeeded}}}, nil); err != nil {
		t.Errorf("everything succeeded: %v, want nil", err)
	}
}
