package reconcile

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/story"
)

type recorder struct {
	mu     sync.Mutex
	events []story.Event
}

func (r *recorder) Emit(e story.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) kinds() []story.Kind {
	var out []story.Kind
	for _, e := range r.events {
		out = append(out, e.Kind)
	}
	return out
}

var webRef = diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "ns", Name: "web"}

func webChange() diff.Change {
	return diff.Change{Ref: webRef, Images: []diff.ImageChange{{Container: "app", From: "app:1", To: "app:2"}}}
}

func TestRolloutTeller(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	start := inplace.Progress{Ref: webRef, Total: 3, MaxUnavailable: 1, Start: true,
		Pods: []inplace.PodProgress{{Name: "a", Phase: inplace.PhaseOld}, {Name: "b", Phase: inplace.PhaseOld, Draining: true}, {Name: "c", Phase: inplace.PhaseDone}}}
	batch := inplace.Progress{Ref: webRef, Batch: 1, Updated: 1, Total: 3, Unavailable: 1, MaxUnavailable: 1, Patched: []string{"a"},
		Pods: []inplace.PodProgress{{Name: "a", Phase: inplace.PhaseRestarting}, {Name: "b", Phase: inplace.PhaseFailed}}}
	tests := []struct {
		name     string
		progress []inplace.Progress
		result   inplace.Result
		want     []story.Kind
	}{
		{name: "succeeded", progress: []inplace.Progress{start, batch},
			result: inplace.Result{Outcome: inplace.Succeeded, Total: 3, Updated: 3, Requests: 12, RateLimitWait: time.Second},
			want:   []story.Kind{story.RolloutStarted, story.Batch, story.RolloutEnded}},
		{name: "failed and rolled back", progress: []inplace.Progress{start, batch, {Start: true, RollingBack: true, Total: 3}},
			result: inplace.Result{Outcome: inplace.Failed, FailedPod: "a", Reason: "ErrImagePull", Total: 3, RolledBack: 1},
			want:   []story.Kind{story.RolloutStarted, story.Batch, story.RollbackStarted, story.PodFailed, story.RolloutEnded}},
		{name: "fallback", result: inplace.Result{Outcome: inplace.Fallback, Reason: "no"},
			want: []story.Kind{story.Fallback}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			teller := rolloutTeller{sink: &rec, app: "shop", change: webChange(), now: func() time.Time { return at }}
			for _, p := range tc.progress {
				teller.progress(p)
			}
			teller.result(tc.result)
			if diff := cmp.Diff(tc.want, rec.kinds()); diff != "" {
				t.Fatalf("kinds (-want +got):\n%s", diff)
			}
			first := rec.events[0]
			if first.App != "shop" || first.Workload != webRef || !first.Time.Equal(at) {
				t.Errorf("event names %q %v at %v, want shop %v at %v", first.App, first.Workload, first.Time, webRef, at)
			}
			end := rec.events[len(rec.events)-1]
			if end.Kind == story.RolloutEnded && (end.Cost == nil || end.Cost.Requests != tc.result.Requests ||
				end.Cost.RequestsPerPod != float64(tc.result.Requests)/3 || end.Cost.RateLimitWait != tc.result.RateLimitWait) {
				t.Errorf("cost %+v, want %d requests (per Pod of 3) and %s waited", end.Cost, tc.result.Requests, tc.result.RateLimitWait)
			}
		})
	}
	var rec recorder
	teller := rolloutTeller{sink: &rec, change: webChange(), now: time.Now}
	teller.progress(start)
	teller.progress(batch)
	want := [][]story.Pod{
		{{Name: "a", State: story.PodOld}, {Name: "b", State: story.PodDraining}, {Name: "c", State: story.PodNew}},
		{{Name: "a", State: story.PodRestarting}, {Name: "b", State: story.PodFailedRun}},
	}
	for i, e := range rec.events {
		if diff := cmp.Diff(want[i], e.PodStates); diff != "" {
			t.Errorf("%s pod states (-want +got):\n%s", e.Kind, diff)
		}
	}
	if diff := cmp.Diff([]story.Image{{Container: "app", From: "app:1", To: "app:2"}}, rec.events[0].Images); diff != "" {
		t.Errorf("images (-want +got):\n%s", diff)
	}
}

// The CLI's lines are today's text (e2e tests grep them).
func TestLineSink(t *testing.T) {
	var buf bytes.Buffer
	sink := lineSink{w: &lockedWriter{w: &buf}}
	for _, e := range []story.Event{
		{Kind: story.SyncStarted, Revision: "abc"},
		{Kind: story.RolloutStarted, Workload: webRef, Images: []story.Image{{Container: "app", From: "app:1", To: "app:2"}}, Pods: 3, Bound: 1},
		{Kind: story.Batch, Workload: webRef, Batch: 1, Pods: 3, Bound: 1, Draining: []string{"web-a"}},
		{Kind: story.Batch, Workload: webRef, Batch: 1, Updated: 0, Pods: 3, Unavailable: 1, Bound: 1, Patched: []string{"web-a"}},
		{Kind: story.PodFailed, Workload: webRef, Pod: "web-a", Reason: "ErrImagePull"},
		{Kind: story.RolloutEnded, Workload: webRef, Outcome: "Failed", Pod: "web-a", Reason: "ErrImagePull", RolledBack: 1},
		{Kind: story.RolloutEnded, Workload: webRef, Outcome: "Succeeded", Updated: 3, Duration: 1234 * time.Millisecond, MostUnavailable: 1},
		{Kind: story.Fallback, Workload: webRef, Outcome: "Fallback", Reason: "a PDB"},
		{Kind: story.Fallback, Workload: webRef, Reason: "structural change"},
	} {
		sink.Emit(e)
	}
	want := `Deployment.apps/ns/web: in place: app app:1 → app:2
Deployment.apps/ns/web: in place: batch 1, 0/3 updated, 1/1 unavailable, patching [web-a]
Deployment.apps/ns/web: in place: FAILED at Pod web-a: ErrImagePull (1 Pods rolled back in place)
Deployment.apps/ns/web: in place: done: 3 Pods updated in 1.2s, at most 1 unavailable
Deployment.apps/ns/web: in place: Fallback: a PDB
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}

// Each event is one JSON record with its kind and fields.
func TestLogSinkJSON(t *testing.T) {
	var buf bytes.Buffer
	sink := LogSink{Log: logr.FromSlogHandler(slog.NewJSONHandler(&buf, nil))}
	sink.Emit(story.Event{Kind: story.RolloutEnded, Workload: webRef, Outcome: "Succeeded", Pods: 4, Updated: 4,
		Duration: 2 * time.Second, MostUnavailable: 1, Cost: &story.Cost{Requests: 20, RequestsPerPod: 5, RateLimitWait: 300 * time.Millisecond},
		PodStates: []story.Pod{{Name: "a", State: story.PodNew}}})
	sink.Emit(story.Event{Kind: story.PodFailed, Workload: webRef, Pod: "web-a", Reason: "ErrImagePull"})
	sink.Emit(story.Event{Kind: story.SyncEnded, Revision: "abc", Outcome: "rollout-failed", Reason: "FAILED at Pod web-a"})
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d records, want 3 (pod states only at V(1)):\n%s", len(lines), buf.String())
	}
	var sync map[string]any
	if err := json.Unmarshal([]byte(lines[2]), &sync); err != nil {
		t.Fatal(err)
	}
	if sync["level"] != "ERROR" || sync["err"] != "FAILED at Pod web-a" || sync["outcome"] != "rollout-failed" {
		t.Errorf("a failed sync's record %s, want an error with the reason", lines[2])
	}
	var end, failed map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &end); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &failed); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"event": "RolloutEnded", "workload": webRef.String(), "outcome": "Succeeded", "pods": 4.0,
		"updated": 4.0, "duration": "2s", "mostUnavailable": 1.0, "requests": 20.0, "requestsPerPod": 5.0, "rateLimitWait": "300ms"}
	for k, v := range want {
		if end[k] != v {
			t.Errorf("RolloutEnded %s = %v, want %v (record %s)", k, end[k], v, lines[0])
		}
	}
	if failed["event"] != "PodFailed" || failed["pod"] != "web-a" || failed["reason"] != "ErrImagePull" || failed["msg"] != messages[story.PodFailed] {
		t.Errorf("PodFailed record %s", lines[1])
	}
}
