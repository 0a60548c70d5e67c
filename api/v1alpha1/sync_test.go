package v1alpha1

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const (
	rev1 = "main@sha1:1111111111111111111111111111111111111111"
	rev2 = "main@sha1:2222222222222222222222222222222222222222"
)

var (
	t0      = metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	deploy  = ObjectRef{APIVersion: "apps/v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
	rolling = []RolloutStatus{{Workload: deploy, PodsDone: 2, PodsTotal: 6, StartedAt: &t0}}
)

// at returns a sync of generation gen at t0 + i seconds.
func at(i int, gen int64, rev string, out Outcome) Sync {
	return Sync{Generation: gen, Revision: rev, Outcome: out, Now: metav1.NewTime(t0.Add(time.Duration(i) * time.Second))}
}

// cond is the part of a condition a case checks.
type cond struct {
	Status metav1.ConditionStatus
	Reason string
}

func TestComputeStatus(t *testing.T) {
	withReason := func(s Sync, reason, msg string) Sync { s.Reason, s.Message = reason, msg; return s }
	withRollouts := func(s Sync) Sync { s.Rollouts = rolling; return s }
	for _, tc := range []struct {
		name  string
		steps []Sync
		// generation of the App when kstatus reads it (the spec may have
		// moved on since the last pass)
		generation int64
		want       map[string]cond // every condition the status holds
		kstatus    status.Status
		attempted  string
		applied    string
		rollouts   int
	}{
		{
			name:  "first pass under way",
			steps: []Sync{at(0, 1, rev1, Progressing)},
			want: map[string]cond{
				ConditionReady:       {metav1.ConditionUnknown, ReasonProgressing},
				ConditionReconciling: {metav1.ConditionTrue, ReasonProgressing},
			},
			kstatus: status.InProgressStatus, attempted: rev1,
		},
		{
			name:  "first pass with no revision found yet",
			steps: []Sync{at(0, 1, "", Progressing)},
			want: map[string]cond{
				ConditionReady:       {metav1.ConditionUnknown, ReasonProgressing},
				ConditionReconciling: {metav1.ConditionTrue, ReasonProgressing},
			},
			kstatus: status.InProgressStatus,
		},
		{
			name:    "in-place rollout in progress",
			steps:   []Sync{at(0, 1, rev1, Progressing), withRollouts(at(1, 1, rev1, Progressing))},
			want:    map[string]cond{ConditionReady: {metav1.ConditionUnknown, ReasonRolloutInProgress}, ConditionReconciling: {metav1.ConditionTrue, ReasonRolloutInProgress}},
			kstatus: status.InProgressStatus, attempted: rev1, rollouts: 1,
		},
		{
			name:    "applied and healthy",
			steps:   []Sync{at(0, 1, rev1, Progressing), withRollouts(at(1, 1, rev1, Progressing)), at(2, 1, rev1, Succeeded)},
			want:    map[string]cond{ConditionReady: {metav1.ConditionTrue, ReasonSucceeded}},
			kstatus: status.CurrentStatus, attempted: rev1, applied: rev1,
		},
		{
			name:    "a commit that does not touch the path",
			steps:   []Sync{at(0, 1, rev1, Succeeded), at(1, 1, rev2, Unchanged)},
			want:    map[string]cond{ConditionReady: {metav1.ConditionTrue, ReasonPathUnchanged}},
			kstatus: status.CurrentStatus, attempted: rev2, applied: rev2,
		},
		{
			name:  "bad commit after a good one",
			steps: []Sync{at(0, 1, rev1, Succeeded), at(1, 1, rev2, Progressing), withReason(at(2, 1, rev2, BadCommit), "BuildFailed", "kustomization.yaml: accumulating resources")},
			want: map[string]cond{
				ConditionReady:   {metav1.ConditionFalse, "BuildFailed"},
				ConditionStalled: {metav1.ConditionTrue, "BuildFailed"},
			},
			kstatus: status.FailedStatus, attempted: rev2, applied: rev1,
		},
		{
			name:  "bad commit with a reason the API server would refuse",
			steps: []Sync{withReason(at(0, 1, rev1, BadCommit), "build failed!", "")},
			want: map[string]cond{
				ConditionReady:   {metav1.ConditionFalse, ReasonBadCommit},
				ConditionStalled: {metav1.ConditionTrue, ReasonBadCommit},
			},
			kstatus: status.FailedStatus, attempted: rev1,
		},
		{
			name:  "in-place rollout failed",
			steps: []Sync{at(0, 1, rev1, Succeeded), withRollouts(at(1, 1, rev2, Progressing)), withRollouts(at(2, 1, rev2, RolloutFailed))},
			want: map[string]cond{
				ConditionReady:   {metav1.ConditionFalse, ReasonRolloutFailed},
				ConditionStalled: {metav1.ConditionTrue, ReasonRolloutFailed},
			},
			kstatus: status.FailedStatus, attempted: rev2, applied: rev1, rollouts: 1,
		},
		{
			name:  "applied but not healthy",
			steps: []Sync{at(0, 1, rev1, Progressing), at(1, 1, rev1, Unhealthy)},
			want: map[string]cond{
				ConditionReady:   {metav1.ConditionFalse, ReasonHealthCheckFailed},
				ConditionStalled: {metav1.ConditionTrue, ReasonHealthCheckFailed},
			},
			kstatus: status.FailedStatus, attempted: rev1,
		},
		{
			name:  "transient error: retrying",
			steps: []Sync{at(0, 1, rev1, Succeeded), at(1, 1, rev2, Retrying)},
			want: map[string]cond{
				ConditionReady:       {metav1.ConditionFalse, ReasonRetrying},
				ConditionReconciling: {metav1.ConditionTrue, ReasonRetrying},
			},
			kstatus: status.InProgressStatus, attempted: rev2, applied: rev1,
		},
		{
			name:  "git operation failed after success: the applied revision stays",
			steps: []Sync{at(0, 1, rev1, Succeeded), at(1, 1, rev1, GitOperationFailed)},
			want: map[string]cond{
				ConditionReady:       {metav1.ConditionFalse, ReasonGitOperationFailed},
				ConditionReconciling: {metav1.ConditionTrue, ReasonRetrying},
			},
			kstatus: status.InProgressStatus, attempted: rev1, applied: rev1,
		},
		{
			name:  "git operation failed before the first sync",
			steps: []Sync{at(0, 1, "", GitOperationFailed)},
			want: map[string]cond{
				ConditionReady:       {metav1.ConditionFalse, ReasonGitOperationFailed},
				ConditionReconciling: {metav1.ConditionTrue, ReasonRetrying},
			},
			kstatus: status.InProgressStatus,
		},
		{
			name:    "git reachable again: the last pass shown again",
			steps:   []Sync{at(0, 1, rev1, Succeeded), at(1, 1, rev1, GitOperationFailed), at(2, 1, rev1, Succeeded)},
			want:    map[string]cond{ConditionReady: {metav1.ConditionTrue, ReasonSucceeded}},
			kstatus: status.CurrentStatus, attempted: rev1, applied: rev1,
		},
		{
			name:    "retry that succeeds clears the failure",
			steps:   []Sync{at(0, 1, rev1, BadCommit), at(1, 1, rev2, Retrying), at(2, 1, rev2, Succeeded)},
			want:    map[string]cond{ConditionReady: {metav1.ConditionTrue, ReasonSucceeded}},
			kstatus: status.CurrentStatus, attempted: rev2, applied: rev2,
		},
		{
			name:    "suspended after success (suspend is a new generation)",
			steps:   []Sync{at(0, 1, rev1, Succeeded), at(1, 2, "", Suspended)},
			want:    map[string]cond{ConditionReady: {metav1.ConditionTrue, ReasonSucceeded}},
			kstatus: status.CurrentStatus, generation: 2, attempted: rev1, applied: rev1,
		},
		{
			name:  "suspended after a bad commit stays failed",
			steps: []Sync{at(0, 1, rev1, BadCommit), at(1, 2, "", Suspended)},
			want: map[string]cond{
				ConditionReady:   {metav1.ConditionFalse, ReasonBadCommit},
				ConditionStalled: {metav1.ConditionTrue, ReasonBadCommit},
			},
			kstatus: status.FailedStatus, generation: 2, attempted: rev1,
		},
		{
			name:    "spec changed since the last pass",
			steps:   []Sync{at(0, 1, rev1, Succeeded)},
			want:    map[string]cond{ConditionReady: {metav1.ConditionTrue, ReasonSucceeded}},
			kstatus: status.InProgressStatus, generation: 2, attempted: rev1, applied: rev1,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var st AppStatus
			for _, s := range tc.steps {
				st = ComputeStatus(&st, s)
			}
			got := map[string]cond{}
			for _, c := range st.Conditions {
				got[c.Type] = cond{c.Status, c.Reason}
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("conditions (-want +got):\n%s", d)
			}
			if errs := metav1validation.ValidateConditions(st.Conditions, field.NewPath("status", "conditions")); len(errs) > 0 {
				t.Errorf("the API server would refuse the conditions: %v", errs.ToAggregate())
			}
			if st.LastAttemptedRevision != tc.attempted || st.LastAppliedRevision != tc.applied {
				t.Errorf("attempted %q applied %q, want %q and %q", st.LastAttemptedRevision, st.LastAppliedRevision, tc.attempted, tc.applied)
			}
			if len(st.Rollouts) != tc.rollouts {
				t.Errorf("rollouts %v, want %d", st.Rollouts, tc.rollouts)
			}
			last := tc.steps[len(tc.steps)-1]
			if st.ObservedGeneration != last.Generation {
				t.Errorf("observedGeneration %d, want %d", st.ObservedGeneration, last.Generation)
			}
			gen := tc.generation
			if gen == 0 {
				gen = last.Generation
			}
			if res := kstatusOf(t, gen, st); res.Status != tc.kstatus {
				t.Errorf("kstatus reads %s (%s), want %s", res.Status, res.Message, tc.kstatus)
			}
		})
	}
}

// kstatusOf is what kstatus (as Flux, Argo CD's health and kubectl-like
// tools use it) makes of an App of generation gen with status st.
func kstatusOf(t *testing.T, gen int64, st AppStatus) *status.Result {
	t.Helper()
	app := &App{
		TypeMeta:   metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: Kind},
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "shop", Generation: gen},
		Status:     st,
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	if err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestComputeStatusTransitionTime(t *testing.T) {
	st := ComputeStatus(nil, at(0, 1, rev1, Succeeded))
	st = ComputeStatus(&st, at(5, 1, rev2, Succeeded))
	if got := meta.FindStatusCondition(st.Conditions, ConditionReady).LastTransitionTime; !got.Equal(&t0) {
		t.Errorf("Ready stayed True but its transition time moved to %s", got)
	}
	st = ComputeStatus(&st, at(9, 1, rev2, Retrying))
	want := metav1.NewTime(t0.Add(9 * time.Second))
	if got := meta.FindStatusCondition(st.Conditions, ConditionReady).LastTransitionTime; !got.Equal(&want) {
		t.Errorf("Ready turned False at %s, transition time %s", want, got)
	}
}

func TestComputeStatusKeepsPrev(t *testing.T) {
	prev := ComputeStatus(nil, withInventory(withRolloutsAt(at(0, 1, rev1, Progressing))))
	before := prev.DeepCopy()
	next := ComputeStatus(&prev, at(1, 2, rev2, Succeeded))
	if d := cmp.Diff(before, &prev); d != "" {
		t.Errorf("ComputeStatus changed its input (-before +after):\n%s", d)
	}
	if next.Inventory == nil || len(next.Inventory.Entries) != 1 {
		t.Errorf("inventory not kept when the pass brings none: %+v", next.Inventory)
	}
	next.Inventory.Entries[0].Name = "changed"
	if prev.Inventory.Entries[0].Name != "web" {
		t.Error("the new status shares its inventory with the old one")
	}
	empty := ComputeStatus(&prev, Sync{Generation: 2, Revision: rev2, Outcome: Succeeded, Inventory: &Inventory{}, ReconcileAt: "now", Now: t0})
	if len(empty.Inventory.Entries) != 0 || empty.LastHandledReconcileAt != "now" {
		t.Errorf("inventory %+v, reconcile-at %q: want the pass's", empty.Inventory, empty.LastHandledReconcileAt)
	}
}

func withRolloutsAt(s Sync) Sync { s.Rollouts = rolling; return s }
func withInventory(s Sync) Sync {
	s.Inventory = &Inventory{Entries: []ObjectRef{deploy}}
	return s
}

func TestComputeStatusLongMessage(t *testing.T) {
	s := at(0, 1, rev1, BadCommit)
	s.Message = strings.Repeat("é", maxMessage) // two bytes each: cut mid-rune
	st := ComputeStatus(nil, s)
	for _, c := range st.Conditions {
		if len(c.Message) > maxMessage || !utf8.ValidString(c.Message) {
			t.Errorf("%s message: %d bytes, valid UTF-8 %v", c.Type, len(c.Message), utf8.ValidString(c.Message))
		}
	}
	if errs := metav1validation.ValidateConditions(st.Conditions, field.NewPath("conditions")); len(errs) > 0 {
		t.Errorf("the API server would refuse the conditions: %v", errs.ToAggregate())
	}
}
