package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/source"
)

// CommitState is the state refit reports for a commit.
type CommitState string

const (
	CommitPending CommitState = "pending"
	CommitSuccess CommitState = "success"
	CommitFailure CommitState = "failure"
)

// StatusReporter sends a commit's state to the Git host.
type StatusReporter interface {
	Report(ctx context.Context, commit string, state CommitState, description string) error
}

// Poller finds the commit an app's ref points at (source.Poller).
type Poller interface {
	Poll(ctx context.Context) (source.Revision, error)
}

var _ Poller = (*source.Poller)(nil)

// App is one app the service keeps in sync.
type App struct {
	Name   string
	Poller Poller
	// Trigger, when set, asks for a poll now (a webhook).
	Trigger *source.Trigger
	// Interval between polls; DriftInterval between comparisons with the
	// cluster when no new commit arrived.
	Interval, DriftInterval time.Duration
	Options                 Options
	// Status, when set, receives the state of every commit acted on.
	Status StatusReporter
}

// appState is what the loop remembers between passes. Everything else is
// re-derived from Git and the cluster.
type appState struct {
	applied  string // last commit applied (healthy or not)
	failed   string // last commit that cannot be applied (a bad commit)
	lastSync time.Time
	failures int // consecutive transient failures, for the backoff
}

// RunApp keeps one app in sync until ctx ends: a cheap poll every
// Interval (or at once on a webhook); on a new commit render, plan, apply,
// roll out in place and report the commit's status; with no new commit,
// correct drift every DriftInterval. A commit that cannot be applied is not
// retried until a new one arrives; transient errors back off.
func (r *Reconciler) RunApp(ctx context.Context, app App) {
	log := logr.FromContextOrDiscard(ctx).WithValues("app", app.Name)
	ctx = logr.NewContext(ctx, log)
	st := &appState{}
	wait := time.Duration(0)
	for {
		var trigger <-chan struct{}
		if app.Trigger != nil {
			trigger = app.Trigger.C()
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-trigger:
			timer.Stop()
			log.V(1).Info("webhook: polling now")
		case <-timer.C:
		}
		wait = r.pass(ctx, app, st)
	}
}

// pass polls once and reconciles if needed; it returns how long to wait
// before the next poll.
func (r *Reconciler) pass(ctx context.Context, app App, st *appState) time.Duration {
	log := logr.FromContextOrDiscard(ctx)
	rev, err := app.Poller.Poll(ctx)
	if err != nil {
		log.Error(err, "poll failed")
		r.metrics.reconciled(app.Name, "poll-error", 0)
		return st.backoff(app.Interval)
	}
	newCommit := rev.Commit != st.applied && rev.Commit != st.failed
	drift := !newCommit && time.Since(st.lastSync) >= app.DriftInterval && rev.Commit != st.failed
	if !newCommit && !drift {
		st.failures = 0
		return st.nextWait(app)
	}
	start := time.Now()
	outcome, err := r.syncUnlessSuperseded(ctx, app, rev, newCommit, st)
	r.metrics.reconciled(app.Name, outcome, time.Since(start))
	switch {
	case outcome == "superseded":
		return 0 // the newer commit, at once
	case err != nil:
		log.Error(err, "reconcile failed", "revision", rev.Commit, "outcome", outcome)
	}
	if outcome == "transient-error" {
		return st.backoff(app.Interval)
	}
	st.failures = 0
	return st.nextWait(app)
}

// syncUnlessSuperseded runs sync and keeps polling meanwhile (on the
// interval and on webhooks). If a newer commit arrives, the running sync is
// cancelled: an in-place rollout stops where it is (its progress is on the
// objects) and the next pass re-targets the remaining Pods to the newer
// images.
func (r *Reconciler) syncUnlessSuperseded(ctx context.Context, app App, rev source.Revision, newCommit bool, st *appState) (string, error) {
	type result struct {
		outcome string
		err     error
	}
	syncCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	failed := st.failed // st belongs to the sync goroutine until it is done
	go func() {
		outcome, err := r.sync(syncCtx, app, rev, newCommit, st)
		done <- result{outcome, err}
	}()
	var trigger <-chan struct{}
	if app.Trigger != nil {
		trigger = app.Trigger.C()
	}
	ticker := time.NewTicker(app.Interval)
	defer ticker.Stop()
	for {
		select {
		case res := <-done:
			return res.outcome, res.err
		case <-trigger:
		case <-ticker.C:
		}
		newer, err := app.Poller.Poll(ctx)
		if err != nil || newer.Commit == rev.Commit || newer.Commit == failed {
			continue
		}
		logr.FromContextOrDiscard(ctx).Info("newer revision: re-targeting", "revision", short(rev.Commit), "newer", short(newer.Commit))
		cancel()
		<-done
		r.report(ctx, app, rev.Commit, CommitFailure, "superseded by "+short(newer.Commit)+" before it was done")
		return "superseded", nil
	}
}

// nextWait is the poll interval, or less when drift correction is due
// sooner.
func (st *appState) nextWait(app App) time.Duration {
	return max(min(app.Interval, time.Until(st.lastSync.Add(app.DriftInterval))), 0)
}

// sync renders, plans and applies one revision, and reports its state.
func (r *Reconciler) sync(ctx context.Context, app App, rev source.Revision, newCommit bool, st *appState) (string, error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("revision", short(rev.Commit))
	if newCommit {
		log.Info("new revision", "message", firstLine(rev.Message))
		r.report(ctx, app, rev.Commit, CommitPending, "refit is applying "+short(rev.Commit))
	}
	plan, err := r.Plan(ctx, rev.Dir, app.Options)
	if err == nil {
		s := plan.Summary()
		if plan.HasChanges() || newCommit {
			log.Info("plan", "summary", s.String())
		}
		var res *Result
		res, err = r.Apply(ctx, plan, app.Options)
		if err == nil && res.Failed() {
			err = rolloutFailure(res)
		}
	}
	st.lastSync = time.Now()
	switch {
	case err == nil:
		st.applied = rev.Commit
		r.metrics.revision(app.Name, rev.Commit)
		r.report(ctx, app, rev.Commit, CommitSuccess, "applied and healthy")
		return "success", nil
	case IsBadCommit(err):
		st.failed = rev.Commit
		r.report(ctx, app, rev.Commit, CommitFailure, err.Error())
		return "bad-commit", err
	case isOutcomeFailure(err):
		// Applied, but a rollout failed or is unhealthy: report it and look
		// again at the drift interval, not in a tight loop.
		st.applied = rev.Commit
		r.report(ctx, app, rev.Commit, CommitFailure, err.Error())
		return "failure", err
	default:
		return "transient-error", err
	}
}

// rolloutError is an in-place rollout that did not succeed.
type rolloutError struct{ msg string }

func (e *rolloutError) Error() string { return e.msg }

func rolloutFailure(res *Result) error {
	var parts []string
	for _, ro := range res.Rollouts {
		if ro.Outcome != inplace.Succeeded {
			parts = append(parts, fmt.Sprintf("%s: %s", ro.Ref, describe(ro)))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "unhealthy")
	}
	return &rolloutError{msg: strings.Join(parts, "; ")}
}

func isOutcomeFailure(err error) bool {
	var ro *rolloutError
	return errors.As(err, &ro) || isHealthError(err)
}

func (r *Reconciler) report(ctx context.Context, app App, commit string, state CommitState, desc string) {
	if app.Status == nil {
		return
	}
	if err := app.Status.Report(ctx, commit, state, desc); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "commit status not reported", "state", string(state))
	}
}

// backoff doubles the wait after each consecutive transient failure, from 1
// second up to the poll interval.
func (st *appState) backoff(interval time.Duration) time.Duration {
	st.failures++
	d := time.Second << min(st.failures-1, 10)
	return min(d, interval)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return line
}
