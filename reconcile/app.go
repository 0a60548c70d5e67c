package reconcile

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/render"
	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/story"
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
	// Observer, when set, hears how every pass goes.
	Observer Observer
	// Lock, when set, is taken around each sync (sharding: the App's
	// lock); the sync runs under syncCtx and release follows it. ok false:
	// not this replica's to sync now, poll again shortly.
	Lock func(ctx context.Context) (syncCtx context.Context, release func(), ok bool)
}

// appState is what the loop remembers between passes. Everything else is
// re-derived from Git and the cluster, except memory, which is also kept in
// the cluster so that a restart does not retry a bad commit.
type appState struct {
	memory apply.Memory
	// announce: the failed commit comes from the memory of an earlier
	// run; the first pass that finds it reports it once more.
	announce bool
	applied  string // last commit applied (healthy or not)
	// failed is the last commit not to be retried until a new one arrives:
	// it cannot be applied (a bad commit) or an in-place rollout of it
	// failed.
	failed string
	// inputs are what the render of applied read (nil: unknown).
	inputs inputs
	// unsaved: memory is not in the store yet (saved under the lock).
	unsaved  bool
	lastSync time.Time
	failures int // consecutive transient failures, for the backoff
	// pollErr is the poll error the App shows ("": none): shown once,
	// and cleared by the next good poll.
	pollErr string
	// last is the last pass the Observer heard that ended a sync or
	// reported a commit: shown again once Git is reachable again.
	last *Pass
}

// outcome is how one pass ended; it is also the result label of
// refit_reconciles_total.
type outcome string

const (
	outcomeSuccess outcome = "success"
	// outcomeFailure: applied, but not healthy; drift passes look again.
	outcomeFailure outcome = "failure"
	// outcomeRolloutFailed: an in-place rollout failed (and maybe rolled
	// back): a bad commit, not retried until a new commit.
	outcomeRolloutFailed outcome = "rollout-failed"
	outcomeBadCommit     outcome = "bad-commit"
	outcomeTransient     outcome = "transient-error"
	outcomeSuperseded    outcome = "superseded"
	outcomePollError     outcome = "poll-error"
)

// pipeline is what the app loop needs of the reconciler: plan and apply one
// revision (*Reconciler).
type pipeline interface {
	Plan(ctx context.Context, root string, opts Options) (*diff.Plan, error)
	Apply(ctx context.Context, plan *diff.Plan, opts Options) (*Result, error)
}

var _ pipeline = (*Reconciler)(nil)

// memoryStore keeps each app's bad-commit memory in the cluster
// (*apply.Applier).
type memoryStore interface {
	Memory(ctx context.Context, app string) (apply.Memory, error)
	SaveMemory(ctx context.Context, app string, m apply.Memory) error
}

var _ memoryStore = (*apply.Applier)(nil)

// crashLimit is how many times refit starts applying one commit without
// finishing (it crashed, or was OOM-killed) before the commit is bad.
const crashLimit = 3

// appLoop is one app's loop and what it depends on.
type appLoop struct {
	app     App
	pipe    pipeline
	mem     memoryStore // nil: the memory lasts as long as the process
	now     func() time.Time
	metrics *metrics
	st      appState
}

// RunApp keeps one app in sync until ctx ends: a cheap poll every
// Interval (or at once on a webhook); on a new commit render, plan, apply,
// roll out in place and report the commit's status; with no new commit,
// correct drift every DriftInterval. A commit that cannot be applied, or
// whose in-place rollout failed, is not retried until a new one arrives;
// transient errors back off.
func (r *Reconciler) RunApp(ctx context.Context, app App) {
	r.runApp(ctx, app, r)
}

// runApp runs app's loop with pipe (r, or r through a pool).
func (r *Reconciler) runApp(ctx context.Context, app App, pipe pipeline) {
	l := &appLoop{app: app, pipe: pipe, now: time.Now, metrics: r.metrics}
	if m, ok := r.applier.(memoryStore); ok {
		l.mem = m
	}
	l.run(ctx)
}

func (l *appLoop) run(ctx context.Context) {
	log := logr.FromContextOrDiscard(ctx).WithValues("app", l.app.Name)
	ctx = logr.NewContext(ctx, log)
	l.recall(ctx)
	wait := time.Duration(0)
	for {
		var trigger <-chan struct{}
		if l.app.Trigger != nil {
			trigger = l.app.Trigger.C()
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
		wait = l.pass(ctx)
	}
}

// pass polls once and reconciles if needed; it returns how long to wait
// before the next poll.
func (l *appLoop) pass(ctx context.Context) time.Duration {
	log := logr.FromContextOrDiscard(ctx)
	app, st := l.app, &l.st
	rev, err := app.Poller.Poll(ctx)
	refused := (errors.Is(err, source.ErrUnverified) || errors.Is(err, source.ErrTreeRefused)) && rev.Commit != ""
	pollErr := ""
	if err != nil && !refused {
		if ctx.Err() != nil {
			return 0 // the loop is stopping: not a Git failure
		}
		log.Error(err, "poll failed")
		l.metrics.reconciled(l.id(), string(outcomePollError), 0)
		pollErr = pollFailure(err)
	}
	act := decidePass(passFacts{commit: rev.Commit, refused: refused, applied: st.applied, failed: st.failed,
		announce: st.announce, driftDue: l.now().Sub(st.lastSync) >= app.DriftInterval, pollErr: pollErr, shown: st.pollErr})
	if !act.writes() && !st.unsaved {
		if act == passPollFailing {
			return st.backoff(app.Interval)
		}
		st.failures = 0
		if rev.Commit == st.failed {
			return app.Interval // no drift pass is due on a commit that failed
		}
		st.announce = false
		return l.nextWait()
	}
	freeSlot, ok := l.slotForLock(ctx)
	if !ok {
		return 0 // ctx is done
	}
	defer freeSlot()
	ctx, release, ok := l.lock(ctx)
	if !ok {
		return lockRetry
	}
	defer release()
	l.saveMemory(ctx)
	switch act {
	case passPollFailed:
		l.showPollError(ctx, pollErr, err)
		return st.backoff(app.Interval)
	case passPollFailing: // only to save the memory
		return st.backoff(app.Interval)
	}
	st.pollErr = "" // every other action shows where the App stands
	switch act {
	case passRecovered:
		l.reshow(ctx)
		st.failures = 0
		if rev.Commit == st.failed {
			return app.Interval
		}
		st.announce = false
		return l.nextWait()
	case passRefuse, passRefused:
		return l.refuse(ctx, rev, err)
	case passAnnounce:
		l.announceRemembered(ctx, rev)
		st.announce, st.failures = false, 0
		return app.Interval
	case passIdle: // only to save the memory
		st.announce, st.failures = false, 0
		return l.nextWait()
	}
	st.announce = false
	newCommit := act == passNewCommit
	if newCommit && l.skipUnchanged(ctx, rev) {
		return l.nextWait()
	}
	start := l.now()
	out, err := l.syncUnlessSuperseded(ctx, rev, newCommit)
	l.metrics.reconciled(l.id(), string(out), l.now().Sub(start))
	switch {
	case out == outcomeSuperseded:
		return 0 // the newer commit, at once
	case err != nil && !newCommit:
		// A new commit's failure is in its SyncEnded record (an error).
		log.Error(err, "reconcile failed", "revision", rev.Commit, "outcome", string(out))
	}
	if out == outcomeTransient {
		return st.backoff(app.Interval)
	}
	st.failures = 0
	return l.nextWait()
}

// syncUnlessSuperseded runs sync and keeps polling meanwhile (on the
// interval and on webhooks). If a newer commit arrives, the running sync is
// cancelled: an in-place rollout stops where it is (its progress is on the
// objects) and the next pass re-targets the remaining Pods to the newer
// images.
func (l *appLoop) syncUnlessSuperseded(ctx context.Context, rev source.Revision, newCommit bool) (outcome, error) {
	type result struct {
		out outcome
		err error
	}
	app := l.app
	syncCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan result, 1)
	failed := l.st.failed // st belongs to the sync goroutine until it is done
	go func() {
		out, err := l.sync(syncCtx, rev, newCommit)
		done <- result{out, err}
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
			return res.out, res.err
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
		l.report(ctx, rev.Commit, CommitFailure, "superseded by "+short(newer.Commit)+" before it was done")
		return outcomeSuperseded, nil
	}
}

// refuse handles a commit the poller would not check out because no
// trusted key signed it: a bad commit, reported once and not retried until
// a new one arrives.
func (l *appLoop) refuse(ctx context.Context, rev source.Revision, err error) time.Duration {
	st := &l.st
	st.failures = 0
	// A commit remembered from an earlier run is reported once more too.
	if rev.Commit != st.failed || st.announce {
		st.failed, st.announce = rev.Commit, false
		logr.FromContextOrDiscard(ctx).Error(err, "reconcile failed", "revision", rev.Commit, "outcome", string(outcomeBadCommit))
		l.metrics.reconciled(l.id(), string(outcomeBadCommit), 0)
		l.report(ctx, rev.Commit, CommitFailure, err.Error())
		l.observe(ctx, rev, outcomeBadCommit, err)
	}
	return l.app.Interval
}

// nextWait is the poll interval, or less when drift correction is due
// sooner.
func (l *appLoop) nextWait() time.Duration {
	due := l.st.lastSync.Add(l.app.DriftInterval).Sub(l.now())
	return max(min(l.app.Interval, due), 0)
}

// sync renders, plans and applies one revision, and reports its state.
func (l *appLoop) sync(ctx context.Context, rev source.Revision, newCommit bool) (outcome, error) {
	app, st := l.app, &l.st
	log := logr.FromContextOrDiscard(ctx).WithValues("revision", short(rev.Commit))
	// The events carry their revision themselves: logged through the app's
	// logger, not log, so no record has the key twice.
	tell := story.Sinks{LogSink{Log: logr.FromContextOrDiscard(ctx)}, app.Options.Story}
	opts := app.Options
	watch := l.watchRollouts(ctx, rev)
	if watch != nil {
		tell = append(tell, watch)
	}
	opts.Story = tell
	opts.Reads = render.NewReads()
	started := l.now()
	begun := false
	// A new commit's sync starts once it has a slot of the pool: its
	// writes (the commit status, the App's status, the bad-commit memory)
	// are then bounded by the pool too, not a thousand at once at a cold
	// start.
	begin := func() {
		if !newCommit {
			return
		}
		started, begun = l.now(), true
		tell.Emit(story.Event{Time: started, Kind: story.SyncStarted, App: app.Name, Source: rev.URL, Revision: rev.Commit,
			Message: firstLine(rev.Message), Author: rev.Author})
		l.report(ctx, rev.Commit, CommitPending, "refit is applying "+short(rev.Commit))
		l.observe(ctx, rev, outcome(PhaseProgressing), nil)
		// Recorded before anything is applied: if refit dies during this
		// sync, the next start counts it (see recall).
		l.remember(ctx, beginAttempt(st.memory, rev.Commit))
	}
	res, err := planAndApply(ctx, l.pipe, rev.Dir, opts, begin, func(plan *diff.Plan) {
		if plan.HasChanges() || newCommit {
			log.Info("plan", "summary", plan.Summary().String())
		}
	})
	if err == nil || isHealthError(err) {
		// A failed rollout counts even when health failed too.
		err = rolloutFailure(res, err)
	}
	watch.stop() // before the pass's last report, which it must not overwrite
	out := classify(err)
	l.noteInputs(ctx, out, opts.Reads, rev)
	st.lastSync = l.now()
	if begun {
		reason := ""
		if err != nil {
			reason = err.Error()
		}
		l.remember(ctx, finishAttempt(st.memory, rev.Commit, out, reason))
		tell.Emit(story.Event{Time: l.now(), Kind: story.SyncEnded, App: app.Name, Source: rev.URL, Revision: rev.Commit,
			Outcome: string(out), Reason: reason, Duration: l.now().Sub(started)})
	}
	l.observe(ctx, rev, out, err)
	if lost := ctx.Err(); lost != nil && l.app.Lock != nil {
		// Sharded: the App's lock was lost (unsharded, a done context is a
		// shutdown or a newer commit, which syncs anyway).
		return l.unobserved(ctx, rev, out, err, lost)
	}
	switch out {
	case outcomeSuccess:
		st.applied = rev.Commit
		l.metrics.revision(l.id(), rev.Commit)
		l.report(ctx, rev.Commit, CommitSuccess, "applied and healthy")
	case outcomeBadCommit, outcomeRolloutFailed:
		// Retrying the same commit cannot help (a failed rollout would only
		// take its Pods down again): wait for a new commit.
		st.failed = rev.Commit
		l.report(ctx, rev.Commit, CommitFailure, err.Error())
	case outcomeFailure:
		// Applied, but unhealthy: report it and look again at the drift
		// interval, not in a tight loop.
		st.applied = rev.Commit
		l.report(ctx, rev.Commit, CommitFailure, err.Error())
	}
	return out, err
}

// unobserved ends a sync whose context (sharded: the App's lock) was done
// by the time of its final status write, which therefore failed: the
// commit is not counted applied, or the App would stay Reconciling until
// the next commit or drift pass. Applied or not, the next pass syncs it
// again under a new lock and writes its status then (its objects are
// already there: a cheap pass). A bad commit is not retried: the next pass
// announces it from the memory, which is saved whatever the context.
func (l *appLoop) unobserved(ctx context.Context, rev source.Revision, out outcome, err, lost error) (outcome, error) {
	log := logr.FromContextOrDiscard(ctx).WithValues("revision", short(rev.Commit), "outcome", string(out))
	switch out {
	case outcomeBadCommit, outcomeRolloutFailed:
		log.Info("sync ended without its status written: reported again")
		l.st.failed, l.st.announce = rev.Commit, true
		return out, err
	case outcomeSuccess, outcomeFailure:
		log.Info("sync ended without its status written: synced again")
		return outcomeTransient, fmt.Errorf("app %s: revision %s: %s, but its status was not written: %w", l.app.Name, short(rev.Commit), out, lost)
	}
	return out, err
}

// classify tells what err, the end of a sync, means for the commit.
func classify(err error) outcome {
	var ro *rolloutError
	switch {
	case err == nil:
		return outcomeSuccess
	case IsBadCommit(err):
		return outcomeBadCommit
	case errors.As(err, &ro) && ro.failed:
		return outcomeRolloutFailed
	case errors.As(err, &ro) && ro.fallback:
		// The in-place path stopped holding between plan and apply and
		// nothing was changed: plan again soon, which sends it the ordinary
		// way.
		return outcomeTransient
	case errors.As(err, &ro) || isHealthError(err):
		return outcomeFailure
	default:
		return outcomeTransient
	}
}

// rolloutError is an in-place rollout that did not succeed, or an apply
// that is not healthy.
type rolloutError struct {
	msg string
	// failed: a rollout failed (a Pod could not take the new images).
	failed bool
	// fallback: a rollout found the in-place path closed and changed
	// nothing.
	fallback bool
	health   error // the apply's *apply.HealthError, if any
}

func (e *rolloutError) Error() string { return e.msg }
func (e *rolloutError) Unwrap() error { return e.health }

// rolloutFailure combines the rollouts that did not succeed and the
// apply's health error; nil when everything succeeded.
func rolloutFailure(res *Result, health error) error {
	if res == nil {
		return health
	}
	e := &rolloutError{health: health}
	var parts []string
	for _, ro := range res.Rollouts {
		switch ro.Outcome {
		case inplace.Succeeded:
			continue
		case inplace.Failed:
			e.failed = true
		case inplace.Fallback:
			e.fallback = true
		}
		parts = append(parts, fmt.Sprintf("%s: %s", ro.Ref, describe(ro)))
	}
	switch {
	case health != nil:
		parts = append(parts, health.Error())
	case len(parts) == 0 && res.Failed():
		parts = append(parts, "unhealthy")
	case len(parts) == 0:
		return nil
	}
	e.msg = strings.Join(parts, "; ")
	return e
}

func (l *appLoop) report(ctx context.Context, commit string, state CommitState, desc string) {
	if l.app.Status == nil {
		return
	}
	if err := l.app.Status.Report(ctx, commit, state, desc); err != nil {
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

// recall reads the app's bad-commit memory when the loop starts: the last
// bad commit is not retried, nor a commit that refit started to apply
// crashLimit times without finishing.
func (l *appLoop) recall(ctx context.Context) {
	if l.mem == nil {
		return
	}
	log := logr.FromContextOrDiscard(ctx)
	m, err := l.mem.Memory(ctx, l.app.Name)
	if err != nil {
		// Not remembering costs at most crashLimit retries of a bad
		// commit; refusing to run would cost the app.
		log.Error(err, "bad-commit memory unreadable: starting without it")
		return
	}
	next, failed, crashed := recallMemory(m, crashLimit)
	l.st.memory, l.st.failed, l.st.announce = next, failed, failed != ""
	if crashed {
		log.Info("commit not retried: refit stopped while applying it", "revision", short(failed), "starts", m.Attempts)
		l.st.unsaved = true // by the first pass under the App's lock
	}
}

// announceRemembered reports the remembered bad commit, which the loop
// will not apply, as a pass with its outcome and a failure status: a new
// run (or a new leader) says at once where the app stands.
func (l *appLoop) announceRemembered(ctx context.Context, rev source.Revision) {
	m := l.st.memory
	out := outcome(m.Outcome)
	if out == "" {
		out = outcomeBadCommit
	}
	logr.FromContextOrDiscard(ctx).Info("commit not retried: remembered as bad", "revision", short(m.Bad), "outcome", string(out))
	l.metrics.reconciled(l.id(), string(out), 0)
	l.report(ctx, m.Bad, CommitFailure, m.Reason)
	l.observe(ctx, rev, out, errors.New(m.Reason))
}

// recallMemory decides what a starting loop makes of its memory: the
// commit not to retry, and whether it is newly bad because refit stopped
// limit times while applying it (next is then the memory to save).
func recallMemory(m apply.Memory, limit int) (next apply.Memory, failed string, crashed bool) {
	if m.Attempt != "" && m.Attempts >= limit {
		next = apply.Memory{Bad: m.Attempt, Outcome: string(outcomeBadCommit), Reason: fmt.Sprintf(
			"refit stopped %d times while applying this commit (crashed or killed, e.g. out of memory): not retried until a new commit", m.Attempts)}
		return next, m.Attempt, true
	}
	return m, m.Bad, false
}

// beginAttempt counts one more start of applying commit.
func beginAttempt(m apply.Memory, commit string) apply.Memory {
	if m.Attempt == commit {
		m.Attempts++
	} else {
		m.Attempt, m.Attempts = commit, 1
	}
	return m
}

// finishAttempt is the memory once a sync of commit ended with out: the
// attempt is over whatever its outcome (refit did not crash), and a bad
// commit is remembered with its reason.
func finishAttempt(m apply.Memory, commit string, out outcome, reason string) apply.Memory {
	if m.Attempt == commit {
		m.Attempt, m.Attempts = "", 0
	}
	if out == outcomeBadCommit || out == outcomeRolloutFailed {
		m.Bad, m.Reason, m.Outcome = commit, reason, string(out)
	}
	return m
}

// remember keeps m, in the cluster when there is a store. A failed write
// is logged, not fatal: the loop still has the memory in hand.
func (l *appLoop) remember(ctx context.Context, m apply.Memory) {
	if m == l.st.memory {
		return
	}
	l.st.memory, l.st.unsaved = m, true
	l.saveMemory(ctx)
}

// saveMemory writes the memory if the store lacks it.
func (l *appLoop) saveMemory(ctx context.Context) {
	if !l.st.unsaved {
		return
	}
	l.st.unsaved = false
	if l.mem == nil {
		return
	}
	// Saved even when the loop is being stopped (an App changed or
	// deleted, a shutdown): an attempt left unfinished would count as a
	// crash and, the third time, make the commit bad.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := l.mem.SaveMemory(ctx, l.app.Name, l.st.memory); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "bad-commit memory not saved")
	}
}
