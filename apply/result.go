package apply

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/refit-gitops/refit/diff"
)

// Action is what Apply did with one object.
type Action string

const (
	Created    Action = "created"
	Configured Action = "configured"
	// Recreated: an immutable field changed and the object was forced
	// (Options.Force or the refit.dev/force annotation): deleted, then
	// created again.
	Recreated Action = "recreated"
	Unchanged Action = "unchanged"
	Deleted   Action = "deleted"
	// SkippedProtected: the live object carries refit.dev/prune: disabled.
	SkippedProtected Action = "skipped-protected"
	// SkippedNotOwned: the plan asks to delete an object that this app's
	// inventory does not list, or that another app's inventory lists.
	SkippedNotOwned Action = "skipped-not-owned"
	// SkippedInGit: the plan deletes an object that Git still holds under
	// another API version.
	SkippedInGit Action = "skipped-in-git"
	// NotPruned: the object left Git but Options.Prune is off; it stays in
	// the inventory so that a later pruning run removes it.
	NotPruned Action = "not-pruned"
	// InPlace: a workload update left to the in-place engine.
	InPlace Action = "in-place"
	// Refused: the plan refused the change (an InPlaceOnly workload with a
	// structural change); nothing was written.
	Refused Action = "refused"
)

// Health is the outcome of the health wait.
type Health string

const (
	// HealthNotChecked: Options.Wait was off, or Apply failed before.
	HealthNotChecked Health = ""
	Healthy          Health = "Healthy"
	Unhealthy        Health = "Unhealthy"
)

// ObjectResult is what happened to one object of the plan.
type ObjectResult struct {
	Ref    diff.Ref `json:"ref"`
	Source string   `json:"source,omitempty"`
	Action Action   `json:"action"`
	// Reason explains a skip, a refusal or a hand-over.
	Reason string `json:"reason,omitempty"`
	// Status and Message are the object's kstatus after the health wait
	// (Current, InProgress, Failed…), when it was waited for.
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
	// current is the kstatus message of an object the server's answer to
	// its write already showed Current: the health wait need not poll it.
	current string
}

// Result is the outcome of Apply, one entry per change of the plan in the
// order they were decided.
type Result struct {
	Objects []ObjectResult `json:"objects"`
	Health  Health         `json:"health,omitempty"`
}

// Count returns how many objects ended with action a.
func (r *Result) Count(a Action) int {
	n := 0
	for _, o := range r.Objects {
		if o.Action == a {
			n++
		}
	}
	return n
}

// Object returns the result of ref, or nil.
func (r *Result) Object(ref diff.Ref) *ObjectResult {
	for i := range r.Objects {
		if r.Objects[i].Ref == ref {
			return &r.Objects[i]
		}
	}
	return nil
}

// Summary is one line for people: counts by action and the health.
func (r *Result) Summary() string {
	var parts []string
	for _, a := range []Action{Created, Configured, Recreated, Deleted, Unchanged, InPlace, Refused, SkippedProtected, SkippedNotOwned, SkippedInGit, NotPruned} {
		if n := r.Count(a); n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, a))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "nothing to do")
	}
	s := strings.Join(parts, ", ")
	if r.Health != HealthNotChecked {
		s += "; " + strings.ToLower(string(r.Health))
	}
	return s
}

// Event is one line of live progress: an object written, deleted or
// skipped (Action set), or the health of an object while waiting (Status
// set).
type Event struct {
	Ref     diff.Ref
	Action  Action
	Status  string
	Message string
}

func (e Event) String() string {
	switch {
	case e.Action != "" && e.Message != "":
		return fmt.Sprintf("%s %s: %s", e.Ref, e.Action, e.Message)
	case e.Action != "":
		return fmt.Sprintf("%s %s", e.Ref, e.Action)
	case e.Status == "Current":
		return fmt.Sprintf("%s ready: %s", e.Ref, e.Message)
	case e.Status == "Failed":
		return fmt.Sprintf("%s failed: %s", e.Ref, e.Message)
	default:
		return fmt.Sprintf("waiting for %s: %s", e.Ref, e.Message)
	}
}

// ProgressTo returns an Options.Progress that writes one line per event
// to w.
func ProgressTo(w io.Writer) func(Event) {
	return func(e Event) { fmt.Fprintln(w, e.String()) }
}

// progress serialises calls to the caller's callback: events come from
// concurrent writers and the callback need not be safe for that.
type progress struct {
	mu sync.Mutex
	fn func(Event)
}

func (p *progress) emit(e Event) {
	if p.fn == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fn(e)
}
