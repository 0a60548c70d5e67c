package reconcile

import (
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/story"
)

// rolloutTeller turns one in-place rollout's progress reports and result
// into story events.
type rolloutTeller struct {
	sink   story.Sink
	app    string
	change diff.Change
	now    func() time.Time
}

// RolloutTeller tells the story of one in-place rollout of app's change to
// sink, as refit run does: pass Progress as the rollout's Options.Progress
// and Result its outcome.
func RolloutTeller(sink story.Sink, app string, change diff.Change) (progress func(inplace.Progress), result func(inplace.Result)) {
	t := rolloutTeller{sink: sink, app: app, change: change, now: time.Now}
	return t.progress, t.result
}

func (t rolloutTeller) event(kind story.Kind) story.Event {
	return story.Event{Time: t.now(), Kind: kind, App: t.app, Workload: t.change.Ref}
}

// progress tells a progress report: the start of the rollout (or of its
// rollback), or a batch.
func (t rolloutTeller) progress(p inplace.Progress) {
	var e story.Event
	switch {
	case p.Pull != nil:
		t.sink.Emit(pullEvent(t.event(story.Pull), p.Pull))
		return
	case p.Start && p.RollingBack:
		e = t.event(story.RollbackStarted)
	case p.Start:
		e = t.event(story.RolloutStarted)
		e.Images, e.Reason = imagesOfChange(t.change), extrasOf(t.change)
	default:
		e = t.event(story.Batch)
		e.Batch, e.Unavailable, e.Patched, e.RollingBack = p.Batch, p.Unavailable, p.Patched, p.RollingBack
		e.Draining = p.Draining
	}
	e.Pods, e.Bound, e.Updated = p.Total, p.MaxUnavailable, p.Updated
	e.PodStates = podStates(p.Pods)
	t.sink.Emit(e)
}

// result tells how the rollout ended: a Fallback (nothing was changed), or
// the Pod that failed and the end with its cost.
func (t rolloutTeller) result(ro inplace.Result) {
	if ro.Outcome == inplace.Fallback {
		e := t.event(story.Fallback)
		e.Outcome, e.Reason = string(ro.Outcome), ro.Reason
		t.sink.Emit(e)
		return
	}
	if ro.Outcome == inplace.Failed {
		e := t.event(story.PodFailed)
		e.Pod, e.Reason = ro.FailedPod, ro.Reason
		t.sink.Emit(e)
	}
	e := endedEvent(ro)
	e.Time, e.App, e.Workload = t.now(), t.app, t.change.Ref
	t.sink.Emit(e)
}

// endedEvent is the RolloutEnded event of ro, without time, app and
// workload.
func endedEvent(ro inplace.Result) story.Event {
	e := story.Event{Kind: story.RolloutEnded, Outcome: string(ro.Outcome), Reason: ro.Reason, Pod: ro.FailedPod}
	e.Pods, e.Updated, e.Duration, e.MostUnavailable, e.RolledBack = ro.Total, ro.Updated, ro.Duration, ro.MaxObserved, ro.RolledBack
	e.Cost = costOf(ro)
	return e
}

func costOf(ro inplace.Result) *story.Cost {
	c := &story.Cost{Requests: ro.Requests, RateLimitWait: ro.RateLimitWait}
	if ro.Total > 0 {
		c.RequestsPerPod = float64(ro.Requests) / float64(ro.Total)
	}
	return c
}

func imagesOfChange(c diff.Change) []story.Image {
	out := make([]story.Image, 0, len(c.Images))
	for _, img := range c.Images {
		out = append(out, story.Image{Container: img.Container, From: img.From, To: img.To})
	}
	return out
}

// podStates colours the engine's phases as the view does.
func podStates(pods []inplace.PodProgress) []story.Pod {
	out := make([]story.Pod, 0, len(pods))
	for _, p := range pods {
		state := story.PodOld
		switch {
		case p.Draining:
			state = story.PodDraining
		case p.Phase == inplace.PhaseRestarting:
			state = story.PodRestarting
		case p.Phase == inplace.PhaseDone:
			state = story.PodNew
		case p.Phase == inplace.PhaseFailed:
			state = story.PodFailedRun
		}
		out = append(out, story.Pod{Name: p.Name, State: state})
	}
	return out
}

// lineSink prints the CLI's progress lines of in-place rollouts.
type lineSink struct{ w *lockedWriter }

var _ story.Sink = lineSink{}

func (s lineSink) Emit(e story.Event) {
	switch e.Kind {
	case story.RolloutStarted:
		s.w.printf("%s: in place: %s", e.Workload, startLine(e))
	case story.Batch:
		if len(e.Draining) == 0 { // the batch's line comes with its patch
			s.w.printf("%s: in place: %s", e.Workload, batchLine(e))
		}
	case story.Fallback:
		// A Fallback the plan decided (no Outcome) is in the plan's output.
		if e.Outcome != "" {
			s.w.printf("%s: in place: %s: %s", e.Workload, e.Outcome, e.Reason)
		}
	case story.RolloutEnded:
		s.w.printf("%s: in place: %s", e.Workload, endLine(e))
	case story.Pull:
		s.w.printf("%s: in place: %s", e.Workload, pullLine(e))
	}
}

func imagesLine(images []story.Image) string {
	if len(images) == 0 {
		return "continuing"
	}
	s := ""
	for i, img := range images {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s %s → %s", img.Container, img.From, img.To)
	}
	return s
}

func batchLine(e story.Event) string {
	return fmt.Sprintf("batch %d, %d/%d updated, %d/%d unavailable%s", e.Batch, e.Updated, e.Pods,
		e.Unavailable, e.Bound, patchedList(e.Patched))
}

func endLine(e story.Event) string {
	switch inplace.Outcome(e.Outcome) {
	case inplace.Succeeded:
		return fmt.Sprintf("done: %d Pods updated in %s, at most %d unavailable", e.Updated, e.Duration.Round(100*time.Millisecond), e.MostUnavailable)
	case inplace.Failed:
		s := fmt.Sprintf("FAILED at Pod %s: %s", e.Pod, e.Reason)
		if e.Pod == "" {
			s = "FAILED: " + e.Reason // before any Pod (a pull)
		}
		if e.RolledBack > 0 {
			s += fmt.Sprintf(" (%d Pods rolled back in place)", e.RolledBack)
		}
		return s
	default:
		return fmt.Sprintf("%s: %s", e.Outcome, e.Reason)
	}
}

// Keys of the service's structured records.
const (
	keyEvent           = "event"
	keyWorkload        = "workload"
	keySource          = "source"
	keyRevision        = "revision"
	keyMessage         = "message"
	keyAuthor          = "author"
	keyImages          = "images"
	keyPods            = "pods"
	keyBound           = "bound"
	keyBatch           = "batch"
	keyUpdated         = "updated"
	keyUnavailable     = "unavailable"
	keyPatched         = "patched"
	keyDraining        = "draining"
	keyRollingBack     = "rollingBack"
	keyPod             = "pod"
	keyOutcome         = "outcome"
	keyReason          = "reason"
	keyDuration        = "duration"
	keyMostUnavailable = "mostUnavailable"
	keyRolledBack      = "rolledBack"
	keyRequests        = "requests"
	keyRequestsPerPod  = "requestsPerPod"
	keyRateLimitWait   = "rateLimitWait"
	keyPodStates       = "podStates"
)

// messages are the service's log message per kind of event.
var messages = map[story.Kind]string{
	story.SyncStarted:     "sync started",
	story.SyncEnded:       "sync ended",
	story.RolloutStarted:  "in-place rollout started",
	story.Batch:           "in-place batch",
	story.PodFailed:       "pod failed on the new images",
	story.Fallback:        "in place not possible: the ordinary way instead",
	story.RollbackStarted: "rollback started",
	story.RolloutEnded:    "in-place rollout ended",
	story.Pull:            "pre-pull",
}

// LogSink logs each event once as a structured record through log: the
// message says the kind, key/values carry the fields the kind sets. The
// app comes from the logger's own values (the service's app loop).
type LogSink struct{ Log logr.Logger }

var _ story.Sink = LogSink{}

// Emit implements story.Sink.
func (s LogSink) Emit(e story.Event) {
	msg, ok := messages[e.Kind]
	if !ok {
		msg = string(e.Kind)
	}
	kv := []any{keyEvent, string(e.Kind)}
	if e.Workload != (diff.Ref{}) {
		kv = append(kv, keyWorkload, e.Workload.String())
	}
	switch e.Kind {
	case story.SyncStarted:
		kv = append(kv, keySource, e.Source, keyRevision, e.Revision, keyMessage, e.Message, keyAuthor, e.Author)
	case story.SyncEnded:
		kv = append(kv, keyRevision, e.Revision, keyOutcome, e.Outcome, keyDuration, e.Duration.String())
	case story.RolloutStarted, story.RollbackStarted:
		if e.Kind == story.RolloutStarted {
			kv = append(kv, keyImages, startLine(e))
		}
		kv = append(kv, keyPods, e.Pods, keyBound, e.Bound, keyUpdated, e.Updated)
	case story.Batch:
		kv = append(kv, keyBatch, e.Batch, keyUpdated, e.Updated, keyPods, e.Pods, keyUnavailable, e.Unavailable,
			keyBound, e.Bound, keyPatched, e.Patched, keyRollingBack, e.RollingBack)
		if len(e.Draining) > 0 {
			kv = append(kv, keyDraining, e.Draining)
		}
	case story.Pull:
		kv = append(kv, pullKeyValues(e)...)
	case story.PodFailed:
		kv = append(kv, keyPod, e.Pod, keyReason, e.Reason)
	case story.Fallback:
		kv = append(kv, keyReason, e.Reason)
	case story.RolloutEnded:
		kv = append(kv, keyOutcome, e.Outcome, keyPods, e.Pods, keyUpdated, e.Updated, keyDuration, e.Duration.String(),
			keyMostUnavailable, e.MostUnavailable)
		if e.Outcome != string(inplace.Succeeded) {
			kv = append(kv, keyPod, e.Pod, keyReason, e.Reason, keyRolledBack, e.RolledBack)
		}
		if e.Cost != nil {
			kv = append(kv, keyRequests, e.Cost.Requests, keyRequestsPerPod, e.Cost.RequestsPerPod,
				keyRateLimitWait, e.Cost.RateLimitWait.String())
		}
	}
	if e.Kind == story.SyncEnded && e.Reason != "" {
		// A sync that failed is an error record, the reason its error.
		s.Log.Error(errors.New(e.Reason), msg, kv...)
	} else {
		s.Log.Info(msg, kv...)
	}
	if len(e.PodStates) > 0 {
		// Every Pod of every batch is detail: the view draws it.
		s.Log.V(1).Info("pod states", keyEvent, string(e.Kind), keyWorkload, e.Workload.String(), keyPodStates, e.PodStates)
	}
}
