// Package story is what refit tells of its work: a typed stream of events
// (an app's sync, an in-place rollout's start, batches, Pod failures,
// fallbacks, rollbacks, its end) that the CLI prints as lines, the service
// logs as structured records, and the browser view draws. Producers emit;
// a Sink decides what becomes of an event. One event, one line: a sink
// never gets the same event twice.
package story

import (
	"time"

	"github.com/refit-gitops/refit/diff"
)

// Kind names an event.
type Kind string

const (
	// SyncStarted: an app starts on a revision.
	SyncStarted Kind = "SyncStarted"
	// SyncEnded: an app's sync of a revision ended (Outcome, Reason).
	SyncEnded Kind = "SyncEnded"
	// RolloutStarted: an in-place rollout of Workload starts (Images,
	// Pods, Bound).
	RolloutStarted Kind = "RolloutStarted"
	// Batch: a pass of the rollout changed something (Batch, Updated,
	// Unavailable, Patched, PodStates).
	Batch Kind = "Batch"
	// PodFailed: a Pod failed on the new images (Pod, Reason).
	PodFailed Kind = "PodFailed"
	// Fallback: a workload goes the ordinary way instead (Reason).
	Fallback Kind = "Fallback"
	// RollbackStarted: the rollout puts the patched Pods back.
	RollbackStarted Kind = "RollbackStarted"
	// RolloutEnded: Outcome, Duration, MostUnavailable, Cost.
	RolloutEnded Kind = "RolloutEnded"
	// Pull: the rollout's pre-pull phase (Outcome "pulling", "pulled" or
	// "off"; PullImages, Nodes, Pulled, GivenUp, Duration, Reason).
	Pull Kind = "Pull"
)

// PodState is a Pod's place in an in-place rollout, as the view colours it.
type PodState string

const (
	PodOld        PodState = "old"        // still on the previous images
	PodDraining   PodState = "draining"   // gate False, waiting out the grace
	PodRestarting PodState = "restarting" // patched, not yet ready on the new images
	PodNew        PodState = "new"        // ready on the new images
	PodFailedRun  PodState = "failed"     // failed on the new images
)

// Pod is one Pod of a rollout and its state.
type Pod struct {
	Name  string   `json:"name"`
	State PodState `json:"state"`
}

// Image is one container's change.
type Image struct {
	Container string `json:"container"`
	From      string `json:"from"`
	To        string `json:"to"`
}

// Cost is what a rollout cost refit's own client.
type Cost struct {
	// Requests refit sent for this rollout, and per Pod.
	Requests       int     `json:"requests"`
	RequestsPerPod float64 `json:"requestsPerPod"`
	// RateLimitWait is the time its requests waited on the client-side
	// rate limit (--qps, --burst).
	RateLimitWait time.Duration `json:"rateLimitWait"`
}

// Event is one thing that happened. Fields beyond Time, Kind and App are
// set as the Kind says.
type Event struct {
	Time     time.Time `json:"time"`
	Kind     Kind      `json:"kind"`
	App      string    `json:"app,omitempty"`
	Workload diff.Ref  `json:"workload"`

	// Of a sync: where from, and the commit (never credentials).
	Source   string `json:"source,omitempty"`
	Revision string `json:"revision,omitempty"`
	Message  string `json:"message,omitempty"`
	Author   string `json:"author,omitempty"`

	Images []Image `json:"images,omitempty"`
	// Pods is the rollout's Pod count; Bound its maxUnavailable.
	Pods  int `json:"pods,omitempty"`
	Bound int `json:"bound,omitempty"`

	Batch       int      `json:"batch,omitempty"`
	Updated     int      `json:"updated,omitempty"`
	Unavailable int      `json:"unavailable,omitempty"`
	Patched     []string `json:"patched,omitempty"`
	// Draining are the batch's Pods taken out of their endpoints (gate
	// False) for the grace before their patch; a Batch event with Draining
	// comes before the one with Patched.
	Draining    []string `json:"draining,omitempty"`
	RollingBack bool     `json:"rollingBack,omitempty"`
	// PodStates is every Pod of the rollout and its state, for the view.
	PodStates []Pod `json:"podStates,omitempty"`

	Pod     string `json:"pod,omitempty"`
	Outcome string `json:"outcome,omitempty"`
	Reason  string `json:"reason,omitempty"`

	Duration        time.Duration `json:"duration,omitempty"`
	MostUnavailable int           `json:"mostUnavailable,omitempty"`
	// RolledBack Pods were put back on their previous images.
	RolledBack int   `json:"rolledBack,omitempty"`
	Cost       *Cost `json:"cost,omitempty"`

	// Of a Pull: the images pre-pulled; the nodes that need them, those
	// that have them, those that pull at the restart instead.
	PullImages []string `json:"pullImages,omitempty"`
	Nodes      int      `json:"nodes,omitempty"`
	Pulled     int      `json:"pulled,omitempty"`
	GivenUp    int      `json:"givenUp,omitempty"`
}

// Sink receives events; it must be safe for concurrent use and must not
// block for long (rollouts emit from their own goroutines).
type Sink interface {
	Emit(Event)
}

// Sinks emits every event to each sink in turn.
type Sinks []Sink

// Emit implements Sink.
func (s Sinks) Emit(e Event) {
	for _, sink := range s {
		if sink != nil {
			sink.Emit(e)
		}
	}
}

// Discard drops every event.
var Discard Sink = Sinks(nil)
