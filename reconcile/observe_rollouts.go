package reconcile

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/story"
)

// RolloutProgress is one workload's in-place rollout under way.
type RolloutProgress struct {
	Workload diff.Ref
	// Done is how many of its Pods run the new images; Total how many the
	// rollout covers.
	Done, Total int
	Started     time.Time
}

// progressEvery is the least time between two progress reports of one
// app's rollouts: each is a status write, and a thousand Apps rolling
// out at once must not flood the API server.
const progressEvery = 2 * time.Second

// rolloutsOf is the rollouts under way after event e, given those before
// (which it does not modify); changed says whether they differ.
func rolloutsOf(before []RolloutProgress, e story.Event) (after []RolloutProgress, changed bool) {
	i := slices.IndexFunc(before, func(r RolloutProgress) bool { return r.Workload == e.Workload })
	switch e.Kind {
	case story.RolloutStarted, story.RollbackStarted, story.Batch:
		next := RolloutProgress{Workload: e.Workload, Done: e.Updated, Total: e.Pods, Started: e.Time}
		if i < 0 {
			return append(slices.Clone(before), next), true
		}
		next.Started = before[i].Started
		if before[i] == next {
			return before, false
		}
		after = slices.Clone(before)
		after[i] = next
		return after, true
	case story.RolloutEnded, story.Fallback:
		if i < 0 {
			return before, false
		}
		return slices.Delete(slices.Clone(before), i, i+1), true
	}
	return before, false
}

// progressWait is how long to wait before reporting a change, the last
// report having been made at last (zero: none yet).
func progressWait(last, now time.Time, every time.Duration) time.Duration {
	if last.IsZero() {
		return 0
	}
	return max(every-now.Sub(last), 0)
}

// rolloutWatch is a story.Sink that reports a sync's in-place rollouts
// under way to the app's Observer as they progress: at most one report
// every progressEvery, and only when they changed since the last one. Its
// stop must come before the sync's own last report, which it would
// otherwise overwrite.
type rolloutWatch struct {
	ctx   context.Context
	obs   Observer
	rev   source.Revision
	every time.Duration
	now   func() time.Time

	mu       sync.Mutex
	rollouts []RolloutProgress
	reported []RolloutProgress
	last     time.Time
	timer    *time.Timer // a report is due (nil: none)
	stopped  bool
	// writing is held while a report is made: stop waits for it.
	writing sync.Mutex
}

var _ story.Sink = (*rolloutWatch)(nil)

// watchRollouts returns the sync's rolloutWatch, or nil when no one
// observes the app.
func (l *appLoop) watchRollouts(ctx context.Context, rev source.Revision) *rolloutWatch {
	if l.app.Observer == nil {
		return nil
	}
	// The pass has just reported its start (a new commit): the first
	// progress report waits its turn too.
	return &rolloutWatch{ctx: ctx, obs: l.app.Observer, rev: rev, every: progressEvery, now: l.now, last: l.now()}
}

// Emit implements story.Sink.
func (w *rolloutWatch) Emit(e story.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var changed bool
	if w.rollouts, changed = rolloutsOf(w.rollouts, e); !changed || w.stopped || w.timer != nil {
		return // a report already due will carry this one
	}
	w.timer = time.AfterFunc(progressWait(w.last, w.now(), w.every), w.report)
}

// report tells the Observer the rollouts as they are now, if they changed
// since the last report.
func (w *rolloutWatch) report() {
	w.writing.Lock()
	defer w.writing.Unlock()
	w.mu.Lock()
	w.timer = nil
	if w.stopped || slices.Equal(w.rollouts, w.reported) {
		w.mu.Unlock()
		return
	}
	rs := slices.Clone(w.rollouts)
	w.reported, w.last = rs, w.now()
	w.mu.Unlock()
	w.obs.Observe(w.ctx, Pass{Revision: w.rev, Phase: PhaseProgressing, Message: progressMessage(rs), Rollouts: rs, Progress: true})
}

// stop ends the reports: a report due is dropped, one being made is
// waited for.
func (w *rolloutWatch) stop() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.stopped = true
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.mu.Unlock()
	w.writing.Lock() // a report under way ends first
	defer w.writing.Unlock()
}

// progressMessage says where the rollouts stand, for the App's conditions.
func progressMessage(rs []RolloutProgress) string {
	if len(rs) == 0 {
		return ""
	}
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%s %s/%s: %d/%d Pods", r.Workload.Kind, r.Workload.Namespace, r.Workload.Name, r.Done, r.Total))
	}
	return "in-place rollout: " + strings.Join(parts, ", ")
}
