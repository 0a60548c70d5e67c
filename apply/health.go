package apply

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/polling"
	"github.com/fluxcd/cli-utils/pkg/kstatus/polling/event"
	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/fluxcd/cli-utils/pkg/object"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/refit-gitops/refit/diff"
)

// HealthError means everything was applied but not everything became
// healthy: a rollout still running when the time ran out (retry later) or
// a failed one.
type HealthError struct {
	// TimedOut is set when Timeout ran out; otherwise objects failed.
	TimedOut bool
	Timeout  time.Duration
	// Objects are the unhealthy objects, with their kstatus and why.
	Objects []ObjectResult
}

func (e *HealthError) Error() string {
	head := "unhealthy"
	if e.TimedOut {
		head = fmt.Sprintf("not healthy after %s", e.Timeout)
	}
	parts := make([]string, len(e.Objects))
	for i, o := range e.Objects {
		parts[i] = fmt.Sprintf("%s: %s: %s", o.Ref, o.Status, o.Message)
	}
	return head + ": " + strings.Join(parts, "; ")
}

// healthSet is what is waited for: every object of Git that is in the
// cluster as Git says, unchanged ones included (a rollout that failed last
// time is still unhealthy). In-place updates are the in-place engine's to
// watch, refused ones were not applied.
func healthSet(objects []ObjectResult) []diff.Ref {
	var out []diff.Ref
	for _, o := range objects {
		switch o.Action {
		case Created, Configured, Recreated, Unchanged:
			out = append(out, o.Ref)
		}
	}
	return out
}

// terminal reports whether every object has a status and none can still
// change by waiting: all Current, or Current and Failed.
func terminal(statuses map[object.ObjMetadata]*event.ResourceStatus, n int) bool {
	if len(statuses) < n {
		return false
	}
	for _, rs := range statuses {
		if rs.Status != status.CurrentStatus && rs.Status != status.FailedStatus {
			return false
		}
	}
	return true
}

// waitHealthy polls the kstatus of everything Git holds until all are
// Current, some failed, or the timeout runs out, reporting progress as it
// changes.
func (r *run) waitHealthy(ctx context.Context) error {
	refs := healthSet(r.result.Objects)
	byID := make(map[object.ObjMetadata]diff.Ref, len(refs))
	set := make(object.ObjMetadataSet, 0, len(refs))
	statuses := map[object.ObjMetadata]*event.ResourceStatus{}
	current := make(map[diff.Ref]string, len(refs))
	for _, o := range r.result.Objects {
		current[o.Ref] = o.current
	}
	for _, ref := range refs {
		id := objMeta(ref)
		byID[id] = ref
		if msg := current[ref]; msg != "" {
			statuses[id] = &event.ResourceStatus{Identifier: id, Status: status.CurrentStatus, Message: msg}
			r.progress.emit(Event{Ref: ref, Status: status.CurrentStatus.String(), Message: msg})
			continue
		}
		set = append(set, id)
	}
	if len(set) > 0 {
		waitCtx, cancel := context.WithTimeout(ctx, r.opts.Timeout)
		defer cancel()
		var pollErr error
		for e := range r.a.poller.Poll(waitCtx, set, polling.PollOptions{PollInterval: r.opts.Interval}) {
			switch e.Type {
			case event.ErrorEvent:
				// A poll cut short by the deadline (client-go's rate limiter
				// refuses to wait past it) is a timeout, not a failure.
				if deadline, _ := waitCtx.Deadline(); waitCtx.Err() == nil && time.Until(deadline) > time.Second+r.opts.Interval {
					pollErr = e.Error
				}
				cancel()
			case event.ResourceUpdateEvent:
				rs := r.effective(byID[e.Resource.Identifier], e.Resource)
				if prev := statuses[rs.Identifier]; prev == nil || prev.Status != rs.Status || prev.Message != rs.Message {
					r.progress.emit(Event{Ref: byID[rs.Identifier], Status: rs.Status.String(), Message: rs.Message})
				}
				statuses[rs.Identifier] = rs
				if terminal(statuses, len(byID)) {
					cancel()
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if pollErr != nil {
			return fmt.Errorf("health: %w", pollErr)
		}
	}
	herr := &HealthError{TimedOut: !terminal(statuses, len(byID)), Timeout: r.opts.Timeout}
	for i := range r.result.Objects {
		o := &r.result.Objects[i]
		id := objMeta(o.Ref)
		if _, waited := byID[id]; !waited {
			continue
		}
		rs := statuses[id]
		if rs == nil {
			o.Status, o.Message = status.UnknownStatus.String(), "no status seen"
		} else {
			o.Status, o.Message = rs.Status.String(), rs.Message
			if rs.Error != nil {
				o.Message += ": " + rs.Error.Error()
			}
		}
		if o.Status != status.CurrentStatus.String() {
			if rs != nil && rs.Resource != nil {
				if why := r.podProblems(ctx, rs.Resource); why != "" {
					o.Message += " (" + why + ")"
				}
			}
			herr.Objects = append(herr.Objects, *o)
		}
	}
	if len(herr.Objects) > 0 {
		r.result.Health = Unhealthy
		return herr
	}
	r.result.Health = Healthy
	return nil
}

// effective treats a finished Job that deleted itself
// (ttlSecondsAfterFinished) as healthy, as Flux does.
func (r *run) effective(ref diff.Ref, rs *event.ResourceStatus) *event.ResourceStatus {
	if rs.Status != status.NotFoundStatus || !r.ttlJobs[ref] {
		return rs
	}
	done := *rs
	done.Status, done.Message = status.CurrentStatus, "Job finished and deleted after its TTL"
	return &done
}

// jobsWithTTL are the Jobs of the plan that delete themselves once done.
func jobsWithTTL(plan *diff.Plan) map[diff.Ref]bool {
	out := map[diff.Ref]bool{}
	for _, c := range plan.Changes {
		if c.Desired == nil || c.Ref.GroupKind() != (schema.GroupKind{Group: "batch", Kind: "Job"}) {
			continue
		}
		if _, ok, _ := unstructured.NestedFieldNoCopy(c.Desired.Object, "spec", "ttlSecondsAfterFinished"); ok {
			out[c.Ref] = true
		}
	}
	return out
}

// podProblems says why a workload's Pods are not ready, when kstatus only
// counts them: the first few waiting reasons (ErrImagePull, CrashLoopBackOff…)
// and scheduling failures. Best effort: no error, an empty string.
func (r *run) podProblems(ctx context.Context, workload *unstructured.Unstructured) string {
	switch workload.GetKind() {
	case "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job":
	default:
		return ""
	}
	sel := &metav1.LabelSelector{}
	raw, found, _ := unstructured.NestedMap(workload.Object, "spec", "selector")
	if !found {
		return ""
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(raw, sel); err != nil {
		return ""
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || selector.Empty() {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	pods := &corev1.PodList{}
	if err := r.a.client.List(ctx, pods, client.InNamespace(workload.GetNamespace()), client.MatchingLabelsSelector{Selector: selector}); err != nil {
		return ""
	}
	return describePods(pods.Items, 3)
}

// describePods lists up to limit distinct problems of pods.
func describePods(pods []corev1.Pod, limit int) string {
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if len(out) < limit && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
				add(fmt.Sprintf("pod %s: %s: %s", p.Name, c.Reason, c.Message))
			}
		}
		for _, cs := range append(append([]corev1.ContainerStatus{}, p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
			switch {
			case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" &&
				cs.State.Waiting.Reason != "ContainerCreating" && cs.State.Waiting.Reason != "PodInitializing":
				add(strings.TrimSuffix(fmt.Sprintf("pod %s: container %s: %s: %s", p.Name, cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message), ": "))
			case cs.State.Terminated != nil && cs.State.Terminated.ExitCode != 0:
				add(fmt.Sprintf("pod %s: container %s: %s (exit code %d)", p.Name, cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode))
			}
		}
	}
	return strings.Join(out, "; ")
}
