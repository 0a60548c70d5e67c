package inplace

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestSurgeCount(t *testing.T) {
	pct := func(s string) *intstr.IntOrString { v := intstr.FromString(s); return &v }
	num := func(n int) *intstr.IntOrString { v := intstr.FromInt(n); return &v }
	for _, tc := range []struct {
		name           string
		maxUnavailable int
		maxSurge       *intstr.IntOrString
		def            intstr.IntOrString
		replicas       int
		want           int
		fallback       bool
	}{
		{"pods may go down: no surge", 1, nil, intstr.FromString("25%"), 3, 0, false},
		{"deployment default 25% of 3 rounds up to 1", 0, nil, intstr.FromString("25%"), 3, 1, false},
		{"deployment 50% of 3 rounds up to 2", 0, pct("50%"), intstr.FromString("25%"), 3, 2, false},
		{"daemonset maxSurge 1", 0, num(1), intstr.FromInt(0), 4, 1, false},
		{"maxSurge 0: fallback", 0, num(0), intstr.FromString("25%"), 3, 0, true},
		{"maxSurge 0%: fallback", 0, pct("0%"), intstr.FromString("25%"), 3, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, fallback, err := SurgeCount(tc.maxUnavailable, tc.maxSurge, tc.def, tc.replicas)
			if err != nil || got != tc.want || (fallback != "") != tc.fallback {
				t.Errorf("got %d, %q, %v; want %d, fallback %v", got, fallback, err, tc.want, tc.fallback)
			}
		})
	}
}

func TestPlanSurge(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	old := func(name, node string) SurgeOriginal { return SurgeOriginal{Name: name, Node: node, Available: true} }
	restarting := func(name, node string) SurgeOriginal { return SurgeOriginal{Name: name, Node: node} }
	done := func(name, node string) SurgeOriginal {
		return SurgeOriginal{Name: name, Node: node, Finished: true, Available: true}
	}
	ready := func(name, node string) SurgeExtra {
		return SurgeExtra{Name: name, Node: node, Created: now.Add(-time.Minute), Scheduled: true, Available: true}
	}
	starting := func(name, node string) SurgeExtra {
		return SurgeExtra{Name: name, Node: node, Created: now.Add(-time.Second), Scheduled: node != ""}
	}
	for _, tc := range []struct {
		name string
		in   SurgeInput
		want SurgeDecision
	}{
		{
			name: "deployment start: one extra Pod, no window yet",
			in:   SurgeInput{Originals: []SurgeOriginal{old("a", "n1"), old("b", "n1"), old("c", "n2")}, MaxSurge: 1, Replicas: 3},
			want: SurgeDecision{Create: 1},
		},
		{
			name: "deployment: a starting extra opens no window",
			in:   SurgeInput{Originals: []SurgeOriginal{old("a", "n1"), old("b", "n1"), old("c", "n2")}, Extras: []SurgeExtra{starting("x", "n1")}, MaxSurge: 1, Replicas: 3},
			want: SurgeDecision{},
		},
		{
			name: "deployment: an available extra opens a window of one",
			in:   SurgeInput{Originals: []SurgeOriginal{old("a", "n1"), old("b", "n1"), old("c", "n2")}, Extras: []SurgeExtra{ready("x", "n1")}, MaxSurge: 1, Replicas: 3},
			want: SurgeDecision{Window: 1},
		},
		{
			name: "deployment: the extra stays while the last original restarts",
			in:   SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), done("b", "n1"), restarting("c", "n2")}, Extras: []SurgeExtra{ready("x", "n1")}, MaxSurge: 1, Replicas: 3},
			want: SurgeDecision{Window: 1},
		},
		{
			name: "deployment: every original finished, the extras go",
			in:   SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), done("b", "n1"), done("c", "n2")}, Extras: []SurgeExtra{ready("x", "n1"), ready("y", "n2")}, MaxSurge: 2, Replicas: 3},
			want: SurgeDecision{Delete: []string{"x", "y"}},
		},
		{
			name: "deployment: gone once none is left, also none being deleted",
			in:   SurgeInput{Originals: []SurgeOriginal{done("a", "n1")}, MaxSurge: 1, Replicas: 1},
			want: SurgeDecision{Gone: true},
		},
		{
			name: "deployment: not gone while one is being deleted",
			in:   SurgeInput{Originals: []SurgeOriginal{done("a", "n1")}, Extras: []SurgeExtra{{Name: "x", Deleting: true}}, MaxSurge: 1, Replicas: 1},
			want: SurgeDecision{},
		},
		{
			name: "deployment: fewer originals left than extras: the excess goes only while enough stay available",
			in: SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), done("b", "n1"), restarting("c", "n2")},
				Extras: []SurgeExtra{ready("x", "n1"), ready("y", "n2")}, MaxSurge: 2, Replicas: 3},
			want: SurgeDecision{Delete: []string{"x"}, Window: 1},
		},
		{
			name: "deployment: an excess extra that would leave too few available stays",
			in: SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), restarting("b", "n1"), restarting("c", "n2")},
				Extras: []SurgeExtra{ready("x", "n1"), ready("y", "n2")}, MaxSurge: 2, Replicas: 3},
			want: SurgeDecision{Window: 2},
		},
		{
			name: "deployment: an excess extra that serves nothing goes first",
			in: SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), done("b", "n1"), restarting("c", "n2")},
				Extras: []SurgeExtra{ready("x", "n1"), starting("y", "")}, MaxSurge: 2, Replicas: 3},
			want: SurgeDecision{Delete: []string{"y"}, Window: 1},
		},
		{
			name: "deployment: maxSurge 2 of 3 makes two",
			in:   SurgeInput{Originals: []SurgeOriginal{old("a", "n1"), old("b", "n1"), old("c", "n2")}, Extras: []SurgeExtra{ready("x", "n1")}, MaxSurge: 2, Replicas: 3},
			want: SurgeDecision{Create: 1, Window: 1},
		},
		{
			name: "unscheduled past the deadline: stuck, saying why",
			in: SurgeInput{Originals: []SurgeOriginal{old("a", "n1")}, MaxSurge: 1, Replicas: 1, Now: now, Deadline: 30 * time.Second,
				Extras: []SurgeExtra{{Name: "x", Created: now.Add(-time.Minute), Unschedulable: "0/2 nodes are available: 2 Insufficient cpu."}}},
			want: SurgeDecision{Stuck: "x", Reason: "no room for an extra Pod: x stayed unscheduled for 30s (0/2 nodes are available: 2 Insufficient cpu.)"},
		},
		{
			name: "unscheduled within the deadline: waits",
			in: SurgeInput{Originals: []SurgeOriginal{old("a", "n1")}, MaxSurge: 1, Replicas: 1, Now: now, Deadline: 30 * time.Second,
				Extras: []SurgeExtra{{Name: "x", Created: now.Add(-10 * time.Second)}}},
			want: SurgeDecision{},
		},
		{
			name: "an extra that cannot start its image stops the rollout before any Pod is touched",
			in: SurgeInput{Originals: []SurgeOriginal{old("a", "n1")}, MaxSurge: 1, Replicas: 1, Now: now,
				Extras: []SurgeExtra{{Name: "x", Scheduled: true, Failure: "container app: ErrImagePull: not found"}}},
			want: SurgeDecision{Stuck: "x", Reason: "the extra Pod x cannot start: container app: ErrImagePull: not found"},
		},
		{
			name: "daemonset start: an extra on the first Pod's node",
			in:   SurgeInput{Originals: []SurgeOriginal{old("b", "n2"), old("a", "n1"), old("c", "n3")}, MaxSurge: 1, Replicas: 3, PerNode: true},
			want: SurgeDecision{CreateFor: []string{"a"}},
		},
		{
			name: "daemonset: the window is the node with an available extra",
			in: SurgeInput{Originals: []SurgeOriginal{old("a", "n1"), old("b", "n2"), old("c", "n3")},
				Extras: []SurgeExtra{ready("x", "n1")}, MaxSurge: 1, Replicas: 3, PerNode: true},
			want: SurgeDecision{Window: 1, WindowNodes: map[string]bool{"n1": true}},
		},
		{
			name: "daemonset: the extra stays while its node's Pod restarts",
			in: SurgeInput{Originals: []SurgeOriginal{restarting("a", "n1"), old("b", "n2"), old("c", "n3")},
				Extras: []SurgeExtra{ready("x", "n1")}, MaxSurge: 1, Replicas: 3, PerNode: true},
			want: SurgeDecision{Window: 1, WindowNodes: map[string]bool{"n1": true}},
		},
		{
			name: "daemonset: its node's Pod finished, the extra goes and the next node gets one",
			in: SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), old("b", "n2"), old("c", "n3")},
				Extras: []SurgeExtra{ready("x", "n1")}, MaxSurge: 1, Replicas: 3, PerNode: true},
			want: SurgeDecision{Delete: []string{"x"}, CreateFor: []string{"b"}},
		},
		{
			name: "daemonset: maxSurge 2 covers two nodes",
			in: SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), old("b", "n2"), old("c", "n3")},
				Extras: []SurgeExtra{ready("y", "n2")}, MaxSurge: 2, Replicas: 3, PerNode: true},
			want: SurgeDecision{CreateFor: []string{"c"}, Window: 1, WindowNodes: map[string]bool{"n2": true}},
		},
		{
			name: "daemonset: two extras on one node, the available one stays",
			in: SurgeInput{Originals: []SurgeOriginal{old("a", "n1"), old("b", "n2")},
				Extras: []SurgeExtra{ready("y", "n1"), starting("x", "n1")}, MaxSurge: 1, Replicas: 2, PerNode: true},
			want: SurgeDecision{Delete: []string{"x"}, Window: 1, WindowNodes: map[string]bool{"n1": true}},
		},
		{
			name: "daemonset: all finished, gone once deleted",
			in:   SurgeInput{Originals: []SurgeOriginal{done("a", "n1"), done("b", "n2")}, MaxSurge: 1, Replicas: 2, PerNode: true},
			want: SurgeDecision{Gone: true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := PlanSurge(tc.in)
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("PlanSurge (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExtraPod(t *testing.T) {
	tmpl := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web", appsv1.DefaultDeploymentUniqueLabelKey: "abc"},
			Annotations: map[string]string{"keep": "me"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx:2"}},
			ReadinessGates: []corev1.PodReadinessGate{{ConditionType: GateCondition}, {ConditionType: "other"}}},
	}
	owner := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "u1"}
	t.Run("deployment", func(t *testing.T) {
		pod := ExtraPod(tmpl, "ns", "web", "u1", owner, "")
		want := map[string]string{"app": "web", SurgeLabel: "u1"}
		if diff := cmp.Diff(want, pod.Labels); diff != "" {
			t.Errorf("labels (-want +got):\n%s", diff)
		}
		if pod.GenerateName != "web-surge-" || pod.Namespace != "ns" {
			t.Errorf("name %q in %q", pod.GenerateName, pod.Namespace)
		}
		if c := metav1.GetControllerOf(pod); c == nil || c.UID != "u1" || c.BlockOwnerDeletion == nil || *c.BlockOwnerDeletion {
			t.Errorf("controller %+v: want the Deployment, not blocking its deletion", c)
		}
		if diff := cmp.Diff([]corev1.PodReadinessGate{{ConditionType: "other"}}, pod.Spec.ReadinessGates); diff != "" {
			t.Errorf("readiness gates (-want +got):\n%s", diff)
		}
		if pod.Spec.Affinity != nil {
			t.Errorf("affinity %+v: want none", pod.Spec.Affinity)
		}
		if tmpl.Labels[SurgeLabel] != "" || len(tmpl.Spec.ReadinessGates) != 2 {
			t.Errorf("the template was changed: %+v", tmpl)
		}
	})
	t.Run("daemonset node", func(t *testing.T) {
		pod := ExtraPod(tmpl, "ns", "agent-x1", "u2", owner, "node-3")
		terms := pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		if len(terms) != 1 || len(terms[0].MatchFields) != 1 || terms[0].MatchFields[0].Values[0] != "node-3" {
			t.Errorf("node affinity %+v: want node-3 by name", terms)
		}
		if !strings.HasPrefix(pod.GenerateName, "agent-x1-surge-") {
			t.Errorf("generateName %q", pod.GenerateName)
		}
		if len(pod.Spec.Tolerations) != len(daemonTolerations) {
			t.Errorf("tolerations %v: want the DaemonSet controller's", pod.Spec.Tolerations)
		}
	})
}

func TestAssessWindow(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	target := Target{Containers: map[string]string{"app": "nginx:2"}}
	pod := func(name, node string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, UID: k8stypes.UID("uid-" + name)},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "nginx:1"}}},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: "nginx:1", Ready: true}}},
		}
	}
	pods := []*corev1.Pod{pod("a", "n1"), pod("b", "n2"), pod("c", "n3")}
	for _, tc := range []struct {
		name   string
		bound  int
		window func(*corev1.Pod) bool
		want   []string
	}{
		{"no surge: bound 0 patches nothing", 0, nil, nil},
		{"deployment window of 1: the first by name", 1, nil, []string{"a"}},
		{"daemonset window on n2: only b", 1, func(p *corev1.Pod) bool { return p.Spec.NodeName == "n2" }, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Assess(PassInput{Pods: pods, Target: target, Now: now, MaxUnavailable: tc.bound, Expected: 3, Window: tc.window})
			var got []string
			for _, p := range d.Patch {
				got = append(got, p.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("patch (-want +got):\n%s", diff)
			}
			if d.Total != 3 || d.Finished {
				t.Errorf("total %d, finished %v: the window must not hide Pods from the rollout", d.Total, d.Finished)
			}
		})
	}
}

func TestSurgeStateObserved(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	extra := func(name string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(now.Add(-time.Second))},
			Spec: corev1.PodSpec{NodeName: "n1"}}
	}
	var cached []*corev1.Pod
	s := &surgeState{extras: func() []*corev1.Pod { return cached }, created: map[string]SurgeExtra{}, deleted: map[string]bool{}}
	names := func(xs []SurgeExtra) map[string]bool {
		out := map[string]bool{}
		for _, x := range xs {
			out[x.Name] = x.Deleting
		}
		return out
	}

	s.created["new"] = SurgeExtra{Name: "new", Created: now}
	s.created["lost"] = SurgeExtra{Name: "lost", Created: now.Add(-time.Minute)}
	cached = []*corev1.Pod{extra("old")}
	s.deleted["old"] = true
	if diff := cmp.Diff(map[string]bool{"new": false, "old": true}, names(s.observed(0, now))); diff != "" {
		t.Errorf("a creation the cache does not show yet counts, one it never showed stops counting, a deletion counts (-want +got):\n%s", diff)
	}
	cached = []*corev1.Pod{extra("new")}
	if diff := cmp.Diff(map[string]bool{"new": false}, names(s.observed(0, now))); diff != "" {
		t.Errorf("once the cache shows them (-want +got):\n%s", diff)
	}
	if len(s.created) != 0 || len(s.deleted) != 0 {
		t.Errorf("created %v, deleted %v: want both forgotten once the cache shows them", s.created, s.deleted)
	}
}
