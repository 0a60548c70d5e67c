package reconcile

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/story"
)

func TestRolloutsOf(t *testing.T) {
	web := diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "ns", Name: "web"}
	db := diff.Ref{Group: "apps", Version: "v1", Kind: "StatefulSet", Namespace: "ns", Name: "db"}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Minute)
	webAt := func(done int) RolloutProgress {
		return RolloutProgress{Workload: web, Done: done, Total: 4, Started: t0}
	}
	tests := []struct {
		name        string
		before      []RolloutProgress
		event       story.Event
		want        []RolloutProgress
		wantChanged bool
	}{
		{"a rollout starts", nil, story.Event{Kind: story.RolloutStarted, Workload: web, Pods: 4, Time: t0},
			[]RolloutProgress{webAt(0)}, true},
		{"a batch moves it on, its start stays", []RolloutProgress{webAt(0)},
			story.Event{Kind: story.Batch, Workload: web, Pods: 4, Updated: 2, Time: t1}, []RolloutProgress{webAt(2)}, true},
		{"a batch that only drains changes nothing", []RolloutProgress{webAt(2)},
			story.Event{Kind: story.Batch, Workload: web, Pods: 4, Updated: 2, Draining: []string{"p"}, Time: t1}, []RolloutProgress{webAt(2)}, false},
		{"a second workload is added", []RolloutProgress{webAt(2)},
			story.Event{Kind: story.RolloutStarted, Workload: db, Pods: 3, Time: t1},
			[]RolloutProgress{webAt(2), {Workload: db, Total: 3, Started: t1}}, true},
		{"the end removes it", []RolloutProgress{webAt(4), {Workload: db, Total: 3, Started: t1}},
			story.Event{Kind: story.RolloutEnded, Workload: web}, []RolloutProgress{{Workload: db, Total: 3, Started: t1}}, true},
		{"a fallback removes it", []RolloutProgress{webAt(0)}, story.Event{Kind: story.Fallback, Workload: web}, []RolloutProgress{}, true},
		{"the end of a rollout not seen", nil, story.Event{Kind: story.RolloutEnded, Workload: web}, nil, false},
		{"other events change nothing", []RolloutProgress{webAt(1)}, story.Event{Kind: story.Pull, Workload: web},
			[]RolloutProgress{webAt(1)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]RolloutProgress(nil), tc.before...)
			got, changed := rolloutsOf(tc.before, tc.event)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("rollouts (-want +got):\n%s", diff)
			}
			if changed != tc.wantChanged {
				t.Errorf("changed = %v, want %v", changed, tc.wantChanged)
			}
			if diff := cmp.Diff(before, tc.before); diff != "" {
				t.Errorf("before was modified (-was +now):\n%s", diff)
			}
		})
	}
}

func TestProgressWait(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		last, now time.Time
		want      time.Duration
	}{
		{"first report at once", time.Time{}, t0, 0},
		{"soon after the last: the rest of the interval", t0, t0.Add(500 * time.Millisecond), 1500 * time.Millisecond},
		{"the interval has passed", t0, t0.Add(3 * time.Second), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := progressWait(tc.last, tc.now, 2*time.Second); got != tc.want {
				t.Errorf("progressWait = %s, want %s", got, tc.want)
			}
		})
	}
}

// passes records what an Observer hears.
type passes struct {
	mu  sync.Mutex
	got []Pass
}

func (p *passes) Observe(_ context.Context, pass Pass) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.got = append(p.got, pass)
}

func (p *passes) all() []Pass {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Pass(nil), p.got...)
}

// A burst of batches is one report now and one, with the latest state,
// an interval later; after stop nothing is reported, not even a report
// that was due.
func TestRolloutWatchThrottles(t *testing.T) {
	obs := &passes{}
	const every = 300 * time.Millisecond
	w := &rolloutWatch{ctx: t.Context(), obs: obs, every: every, now: time.Now}
	web := diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "ns", Name: "web"}
	waitReports := func(n int) []Pass {
		deadline := time.Now().Add(5 * time.Second)
		for len(obs.all()) < n && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		return obs.all()
	}
	w.Emit(story.Event{Kind: story.RolloutStarted, Workload: web, Pods: 10, Time: time.Now()})
	if got := waitReports(1); len(got) != 1 {
		t.Fatalf("reports = %d, want the first at once", len(got))
	}
	first := time.Now()
	for i := 1; i <= 5; i++ {
		w.Emit(story.Event{Kind: story.Batch, Workload: web, Pods: 10, Updated: i})
	}
	got := waitReports(2)
	if gap := time.Since(first); gap < every-50*time.Millisecond {
		t.Errorf("second report %s after the first, want about %s", gap, every)
	}
	time.Sleep(every) // a third report would come now
	got = obs.all()
	if len(got) != 2 {
		t.Fatalf("reports = %d, want 2 (the first at once, then the latest)", len(got))
	}
	if d := got[1].Rollouts[0].Done; d != 5 {
		t.Errorf("second report: %d Pods done, want the latest, 5", d)
	}
	if !got[1].Progress || got[1].Phase != PhaseProgressing {
		t.Errorf("report = %+v, want a progress report of a progressing pass", got[1])
	}
	// A change long after the last report is reported at once; the next
	// one is due an interval later, and stop drops it.
	w.Emit(story.Event{Kind: story.Batch, Workload: web, Pods: 10, Updated: 6})
	if got := waitReports(3); len(got) != 3 || got[2].Rollouts[0].Done != 6 {
		t.Fatalf("reports = %+v, want a third, at once, with 6 done", got)
	}
	w.Emit(story.Event{Kind: story.Batch, Workload: web, Pods: 10, Updated: 7})
	w.stop()
	w.Emit(story.Event{Kind: story.Batch, Workload: web, Pods: 10, Updated: 8})
	time.Sleep(2 * every) // nothing may happen: there is nothing to wait for
	if n := len(obs.all()); n != 3 {
		t.Errorf("reports after stop: %d, want none", n-3)
	}
}
