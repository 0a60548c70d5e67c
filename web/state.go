package web

import (
	"time"

	"github.com/refit-gitops/refit/story"
)

// State is what the view shows, as /state.json serves it.
type State struct {
	Apps []App `json:"apps"`
	// Active are the in-place rollouts in progress, Recent the last ended
	// ones, newest first.
	Active []Rollout `json:"active"`
	Recent []Rollout `json:"recent"`
}

// App is an app's last sync.
type App struct {
	Name     string    `json:"name"`
	Source   string    `json:"source,omitempty"`
	Revision string    `json:"revision,omitempty"`
	Message  string    `json:"message,omitempty"`
	Author   string    `json:"author,omitempty"`
	Syncing  bool      `json:"syncing"`
	Result   string    `json:"result,omitempty"`
	Reason   string    `json:"reason,omitempty"`
	When     time.Time `json:"when"`
}

// Rollout is one in-place rollout, in progress or ended.
type Rollout struct {
	App      string        `json:"app,omitempty"`
	Workload string        `json:"workload"`
	Images   []story.Image `json:"images,omitempty"`
	Total    int           `json:"total"`
	Bound    int           `json:"bound"`
	// Pods is every Pod and its state, while the rollout runs.
	Pods        []story.Pod `json:"pods,omitempty"`
	Batch       int         `json:"batch"`
	Updated     int         `json:"updated"`
	Unavailable int         `json:"unavailable"`
	// Window is the Pods of the current batch (draining, or patched).
	Window      []string  `json:"window,omitempty"`
	RollingBack bool      `json:"rollingBack,omitempty"`
	Failures    []Failure `json:"failures,omitempty"`
	Started     time.Time `json:"started"`

	Ended           time.Time     `json:"ended,omitzero"`
	Outcome         string        `json:"outcome,omitempty"`
	Reason          string        `json:"reason,omitempty"`
	Duration        time.Duration `json:"duration,omitempty"`
	MostUnavailable int           `json:"mostUnavailable,omitempty"`
	RolledBack      int           `json:"rolledBack,omitempty"`
	Cost            *story.Cost   `json:"cost,omitempty"`
}

// Failure is a Pod that failed on the new images, and why.
type Failure struct {
	Pod    string `json:"pod"`
	Reason string `json:"reason"`
}

// maxFailures caps the failures kept per rollout: a thousand Pods failing
// the same way tell no more than a few.
const maxFailures = 10

// apply changes s by e. s owns its slices: nothing of e is kept by
// reference, so a producer may reuse its own.
func (s *State) apply(e story.Event, keep int) {
	switch e.Kind {
	case story.SyncStarted, story.SyncEnded:
		a := s.app(e.App)
		a.When = e.Time
		for _, f := range []struct {
			dst *string
			v   string
		}{
			{&a.Source, e.Source}, {&a.Revision, e.Revision}, {&a.Message, e.Message}, {&a.Author, e.Author},
		} {
			if f.v != "" {
				*f.dst = f.v
			}
		}
		a.Syncing = e.Kind == story.SyncStarted
		if e.Kind == story.SyncEnded {
			a.Result, a.Reason = e.Outcome, e.Reason
		}
	case story.RolloutStarted:
		s.end(e.App, e.Workload.String()) // a rollout started again replaces its unfinished one
		s.Active = append(s.Active, Rollout{App: e.App, Workload: e.Workload.String(), Images: clone(e.Images),
			Total: e.Pods, Bound: e.Bound, Pods: clone(e.PodStates), Started: e.Time})
	case story.Batch:
		r := s.rollout(e)
		r.Batch, r.Updated, r.Unavailable, r.RollingBack = e.Batch, e.Updated, e.Unavailable, e.RollingBack
		// The batch's Pods: draining for the grace, then patched.
		r.Window = clone(e.Patched)
		if len(r.Window) == 0 {
			r.Window = clone(e.Draining)
		}
		if e.Bound > 0 {
			r.Bound = e.Bound
		}
		if len(e.PodStates) > 0 {
			r.Pods = clone(e.PodStates)
			r.Total = max(r.Total, len(r.Pods))
		}
	case story.PodFailed:
		r := s.rollout(e)
		if len(r.Failures) < maxFailures {
			r.Failures = append(r.Failures, Failure{Pod: e.Pod, Reason: e.Reason})
		}
		for i := range r.Pods {
			if r.Pods[i].Name == e.Pod {
				r.Pods[i].State = story.PodFailedRun
			}
		}
	case story.RollbackStarted:
		r := s.rollout(e)
		r.RollingBack, r.Window = true, nil
		if len(e.PodStates) > 0 {
			r.Pods = clone(e.PodStates)
		}
	case story.Fallback:
		r := s.rollout(e)
		r.Outcome, r.Reason = "Fallback", e.Reason
		s.finish(e, keep)
	case story.RolloutEnded:
		r := s.rollout(e)
		r.Outcome, r.Duration, r.MostUnavailable, r.RolledBack = e.Outcome, e.Duration, e.MostUnavailable, e.RolledBack
		if e.Pods > 0 {
			r.Total, r.Updated = e.Pods, e.Updated
		}
		if e.Reason != "" {
			r.Reason = e.Reason
		}
		if e.Cost != nil {
			c := *e.Cost
			r.Cost = &c
		}
		s.finish(e, keep)
	}
}

func (s *State) app(name string) *App {
	for i := range s.Apps {
		if s.Apps[i].Name == name {
			return &s.Apps[i]
		}
	}
	s.Apps = append(s.Apps, App{Name: name})
	return &s.Apps[len(s.Apps)-1]
}

// rollout is e's rollout in progress; one is made up when the view started
// after the rollout did.
func (s *State) rollout(e story.Event) *Rollout {
	w := e.Workload.String()
	for i := range s.Active {
		if s.Active[i].App == e.App && s.Active[i].Workload == w {
			return &s.Active[i]
		}
	}
	s.Active = append(s.Active, Rollout{App: e.App, Workload: w, Total: e.Pods, Bound: e.Bound, Started: e.Time})
	return &s.Active[len(s.Active)-1]
}

// finish moves e's rollout to the recent ones, newest first, keeping keep.
func (s *State) finish(e story.Event, keep int) {
	r, ok := s.end(e.App, e.Workload.String())
	if !ok {
		return
	}
	r.Ended = e.Time
	if r.Duration == 0 && !r.Started.IsZero() {
		r.Duration = e.Time.Sub(r.Started)
	}
	// The grid is for watching; an ended rollout keeps its figures only,
	// so memory stays bounded by keep, not by Pods.
	r.Pods, r.Window = nil, nil
	s.Recent = append([]Rollout{r}, s.Recent...)
	if len(s.Recent) > keep {
		s.Recent = s.Recent[:keep]
	}
}

// end removes a rollout in progress and returns it.
func (s *State) end(app, workload string) (Rollout, bool) {
	for i, r := range s.Active {
		if r.App == app && r.Workload == workload {
			s.Active = append(s.Active[:i], s.Active[i+1:]...)
			return r, true
		}
	}
	return Rollout{}, false
}

// Counts is how many Pods of r are in each state, for the legend.
func (r Rollout) Counts() map[story.PodState]int {
	c := map[story.PodState]int{}
	for _, p := range r.Pods {
		c[p.State]++
	}
	return c
}

// InWindow reports whether pod is patched in the current batch.
func (r Rollout) InWindow(pod string) bool {
	for _, p := range r.Window {
		if p == pod {
			return true
		}
	}
	return false
}

func clone[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return append([]T(nil), s...)
}

// copyState is a deep enough copy of s for rendering outside the lock.
func copyState(s *State) State {
	c := State{Apps: clone(s.Apps), Active: clone(s.Active), Recent: clone(s.Recent)}
	for i := range c.Active {
		c.Active[i].Pods = clone(c.Active[i].Pods)
		c.Active[i].Window = clone(c.Active[i].Window)
		c.Active[i].Failures = clone(c.Active[i].Failures)
	}
	return c
}
