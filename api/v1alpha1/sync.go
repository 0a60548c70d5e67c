package v1alpha1

import (
	"regexp"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of an App, as kstatus reads them.
const (
	ConditionReady       = "Ready"
	ConditionReconciling = "Reconciling"
	ConditionStalled     = "Stalled"
)

// Reasons of the App's conditions.
const (
	ReasonProgressing        = "Progressing"
	ReasonRolloutInProgress  = "RolloutInProgress"
	ReasonRetrying           = "ProgressingWithRetry"
	ReasonSucceeded          = "ReconciliationSucceeded"
	ReasonPathUnchanged      = "PathUnchanged"
	ReasonBadCommit          = "BadCommit"
	ReasonRolloutFailed      = "RolloutFailed"
	ReasonHealthCheckFailed  = "HealthCheckFailed"
	ReasonGitOperationFailed = "GitOperationFailed"
)

// Outcome is how a pass over an App ended, in the three kinds that drive
// refit's retries (done, waiting, transient, bad commit) and a few finer
// ones the status tells apart.
type Outcome string

const (
	// Progressing: refit works on the revision (fetch, apply, health
	// wait, an in-place rollout).
	Progressing Outcome = "Progressing"
	// Succeeded: the revision is applied and healthy.
	Succeeded Outcome = "Succeeded"
	// Unchanged: a new commit did not touch the App's path; nothing was
	// rendered or applied, and the cluster already holds what it says.
	Unchanged Outcome = "Unchanged"
	// Retrying: a transient error (API, network); refit backs off and
	// tries the same revision again.
	Retrying Outcome = "Retrying"
	// BadCommit: the revision cannot be applied (render failure, invalid
	// manifest, refused change); refit waits for a new commit.
	BadCommit Outcome = "BadCommit"
	// RolloutFailed: an in-place rollout stopped (bad image, deadline);
	// refit waits for a new commit.
	RolloutFailed Outcome = "RolloutFailed"
	// Unhealthy: applied, but not healthy within the timeout.
	Unhealthy Outcome = "Unhealthy"
	// GitOperationFailed: polling the repository failed (unreachable
	// host, refused credentials, a repository or ref gone); refit backs
	// off and polls again. The last applied revision stays as it was.
	GitOperationFailed Outcome = "GitOperationFailed"
	// Suspended: refit did nothing; the status stays as it was.
	Suspended Outcome = "Suspended"
)

// Sync is what refit knows after a pass over an App.
type Sync struct {
	// Generation of the App's spec the pass used.
	Generation int64
	// Revision the pass worked on ("main@sha1:…"); empty when refit has
	// not found one yet.
	Revision string
	Outcome  Outcome
	// Reason, a CamelCase word, refines the outcome's own reason (e.g.
	// BuildFailed for a BadCommit); Message says what happened.
	Reason, Message string
	// Rollouts in progress (Progressing), or where one stopped
	// (RolloutFailed).
	Rollouts []RolloutStatus
	// Inventory, when not nil, replaces the recorded one.
	Inventory *Inventory
	// ReconcileAt is the refit.dev/reconcile-at value this pass handled.
	ReconcileAt string
	Now         metav1.Time
}

// ComputeStatus returns the status an App has after the pass s, given the
// status it had. It does not modify prev.
func ComputeStatus(prev *AppStatus, s Sync) AppStatus {
	st := AppStatus{}
	if prev != nil {
		prev.DeepCopyInto(&st)
	}
	st.ObservedGeneration = s.Generation
	if s.ReconcileAt != "" {
		st.LastHandledReconcileAt = s.ReconcileAt
	}
	if s.Inventory != nil {
		st.Inventory = s.Inventory.DeepCopy()
	}
	if s.Outcome == Suspended {
		return st
	}
	if s.Revision != "" {
		st.LastAttemptedRevision = s.Revision
	}
	st.Rollouts = nil
	c := conditionsOf(s)
	for _, t := range []string{ConditionReady, ConditionReconciling, ConditionStalled} {
		cond, ok := c[t]
		if !ok {
			meta.RemoveStatusCondition(&st.Conditions, t)
			continue
		}
		cond.Type, cond.ObservedGeneration, cond.LastTransitionTime = t, s.Generation, s.Now
		meta.SetStatusCondition(&st.Conditions, cond)
	}
	switch s.Outcome {
	case Succeeded, Unchanged:
		st.LastAppliedRevision = s.Revision
	case Progressing, RolloutFailed:
		st.Rollouts = cloneRollouts(s.Rollouts)
	}
	return st
}

// conditionsOf returns the conditions an outcome sets, by type; a type
// not in the map is removed.
func conditionsOf(s Sync) map[string]metav1.Condition {
	cond := func(status metav1.ConditionStatus, reason, message string) metav1.Condition {
		return metav1.Condition{Status: status, Reason: reasonOr(s.Reason, reason), Message: message}
	}
	msg := message(s.Message)
	switch s.Outcome {
	case Succeeded:
		return map[string]metav1.Condition{ConditionReady: cond(metav1.ConditionTrue, ReasonSucceeded, or(msg, "Applied revision: "+s.Revision))}
	case Unchanged:
		return map[string]metav1.Condition{ConditionReady: cond(metav1.ConditionTrue, ReasonPathUnchanged, or(msg, "Path unchanged at revision: "+s.Revision))}
	case BadCommit, RolloutFailed, Unhealthy:
		reason := map[Outcome]string{BadCommit: ReasonBadCommit, RolloutFailed: ReasonRolloutFailed, Unhealthy: ReasonHealthCheckFailed}[s.Outcome]
		failed := cond(metav1.ConditionFalse, reason, or(msg, string(s.Outcome)+": "+s.Revision))
		stalled := failed
		stalled.Status = metav1.ConditionTrue
		return map[string]metav1.Condition{ConditionReady: failed, ConditionStalled: stalled}
	case Retrying:
		failed := cond(metav1.ConditionFalse, ReasonRetrying, or(msg, "Retrying revision: "+s.Revision))
		retrying := metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonRetrying, Message: failed.Message}
		return map[string]metav1.Condition{ConditionReady: failed, ConditionReconciling: retrying}
	case GitOperationFailed:
		// As Flux's GitRepository: not Ready, and retrying.
		failed := cond(metav1.ConditionFalse, ReasonGitOperationFailed, or(msg, "Git operation failed"))
		retrying := metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonRetrying, Message: failed.Message}
		return map[string]metav1.Condition{ConditionReady: failed, ConditionReconciling: retrying}
	default: // Progressing, and an outcome this version does not know
		reason := ReasonProgressing
		if len(s.Rollouts) > 0 {
			reason = ReasonRolloutInProgress
		}
		m := or(msg, "Reconciling revision: "+s.Revision)
		return map[string]metav1.Condition{
			ConditionReady:       cond(metav1.ConditionUnknown, reason, m),
			ConditionReconciling: cond(metav1.ConditionTrue, reason, m),
		}
	}
}

// reasonRE is the API server's rule for a condition's reason.
var reasonRE = regexp.MustCompile(`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`)

// maxReason and maxMessage are the API server's limits on a condition.
const (
	maxReason  = 1024
	maxMessage = 32768
)

// reasonOr returns reason when the API server would take it, else def: a
// status that fails validation would not be written at all.
func reasonOr(reason, def string) string {
	if len(reason) <= maxReason && reasonRE.MatchString(reason) {
		return reason
	}
	return def
}

// message cuts m to the API server's limit, on a rune boundary.
func message(m string) string {
	if len(m) <= maxMessage {
		return m
	}
	cut := maxMessage - len("…")
	for cut > 0 && !utf8.RuneStart(m[cut]) {
		cut--
	}
	return m[:cut] + "…"
}

func or(s, def string) string {
	if s != "" {
		return s
	}
	return message(def)
}

func cloneRollouts(rs []RolloutStatus) []RolloutStatus {
	if len(rs) == 0 {
		return nil
	}
	out := make([]RolloutStatus, len(rs))
	for i := range rs {
		rs[i].DeepCopyInto(&out[i])
	}
	return out
}
