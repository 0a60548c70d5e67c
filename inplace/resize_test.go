package inplace

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
)

func q(s string) resource.Quantity { return resource.MustParse(s) }

func reqs(cpu, mem string) *corev1.ResourceRequirements {
	r := &corev1.ResourceRequirements{Requests: corev1.ResourceList{}}
	if cpu != "" {
		r.Requests[corev1.ResourceCPU] = q(cpu)
	}
	if mem != "" {
		r.Requests[corev1.ResourceMemory] = q(mem)
	}
	return r
}

// resizedPod is a Pod whose container app asks for cpu (spec) and whose
// node reports status (nil: not reported), with conditions.
func resizedPod(cpu string, status *corev1.ResourceRequirements, state *PodState, conds ...corev1.PodCondition) *corev1.Pod {
	cs := running("app", "app:1", "sha256:one", "c1", 0, true)
	cs.Resources = status
	pod := podWith("app:1", cs, state)
	pod.Spec.Containers[0].Resources = *reqs(cpu, "")
	pod.Status.Conditions = conds
	return pod
}

func cond(t corev1.PodConditionType, reason string) corev1.PodCondition {
	return corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: "node says so"}
}

// condAt is cond as the node wrote it for the Pod's generation.
func condAt(t corev1.PodConditionType, reason string, generation int64) corev1.PodCondition {
	c := cond(t, reason)
	c.ObservedGeneration = generation
	return c
}

func TestResourcesOf(t *testing.T) {
	spec := map[string]any{"containers": []any{
		map[string]any{"name": "app", "resources": map[string]any{
			"requests": map[string]any{"cpu": "100m", "ephemeral-storage": "1Gi"},
			"limits":   map[string]any{"cpu": "0.5", "memory": "128Mi"}}},
		map[string]any{"name": "side"},
	}}
	got, err := resourcesOf(spec)
	if err != nil {
		t.Fatal(err)
	}
	// The memory request defaults to its limit, as on a Pod; ephemeral
	// storage is not resized; a container that sets nothing is no target.
	want := map[string]ContainerResources{"app": {"requests.cpu": q("100m"), "limits.cpu": q("500m"), "limits.memory": q("128Mi"), "requests.memory": q("128Mi")}}
	if d := cmp.Diff(resourceLines(want), resourceLines(got)); d != "" {
		t.Errorf("resourcesOf (-want +got):\n%s", d)
	}
}

func TestRestartsOnUpdate(t *testing.T) {
	target := Target{Containers: map[string]string{"app": "app:1"}, Resources: map[string]ContainerResources{"app": {"requests.cpu": q("200m")}}}
	restartCPU := []corev1.ContainerResizePolicy{{ResourceName: corev1.ResourceCPU, RestartPolicy: corev1.RestartContainer}}
	restartMem := []corev1.ContainerResizePolicy{{ResourceName: corev1.ResourceMemory, RestartPolicy: corev1.RestartContainer}}
	for _, tc := range []struct {
		name   string
		image  string
		cpu    string
		policy []corev1.ContainerResizePolicy
		want   bool
	}{
		{"resize, default policy", "app:1", "100m", nil, false},
		{"resize, cpu restarts", "app:1", "100m", restartCPU, true},
		{"resize, only memory restarts", "app:1", "100m", restartMem, false},
		{"cpu already there, cpu restarts", "app:1", "200m", restartCPU, false},
		{"new image", "app:0", "200m", nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pod := resizedPod(tc.cpu, nil, nil)
			pod.Spec.Containers[0].Image, pod.Spec.Containers[0].ResizePolicy = tc.image, tc.policy
			if got := restartsOnUpdate(pod, target); got != tc.want {
				t.Errorf("restartsOnUpdate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestResizePatch(t *testing.T) {
	target := Target{Resources: map[string]ContainerResources{"app": {"requests.cpu": q("200m")}}}
	pod := resizedPod("100m", nil, nil)
	pod.Spec.Containers[0].Resources.Requests[corev1.ResourceMemory] = q("64Mi")
	raw, resized, err := ResizePatch(pod, target)
	if err != nil {
		t.Fatal(err)
	}
	got := patchOps(t, raw)
	// The Pod's UID and the resources seen are tested, the memory request
	// the target does not name is kept.
	if len(got) != 3 || got[0].Op != "test" || got[0].Path != "/metadata/uid" || got[0].Value != "uid-p" ||
		got[1].Op != "test" || got[2].Op != "replace" || got[2].Path != "/spec/containers/0/resources" {
		t.Fatalf("ops: %+v", got)
	}
	next, _ := json.Marshal(got[2].Value)
	if !strings.Contains(string(next), `"cpu":"200m"`) || !strings.Contains(string(next), `"memory":"64Mi"`) {
		t.Errorf("replace value %s: want cpu 200m and memory 64Mi", next)
	}
	if d := cmp.Diff(map[string]ResizeBefore{"app": {}}, resized); d != "" {
		t.Errorf("resized (-want +got):\n%s", d)
	}
	if raw, _, _ := ResizePatch(resizedPod("0.2", nil, nil), target); raw != nil {
		t.Errorf("a Pod at the target (0.2 = 200m) gets a resize: %s", raw)
	}
}

func TestResizePhase(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:1"}, Resources: map[string]ContainerResources{"app": {"requests.cpu": q("200m")}}}
	ours := &PodState{Rollout: rolloutID, UID: "uid-p", PatchedAt: t0, Resized: map[string]ResizeBefore{"app": {}}}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		now  time.Time
		want Phase
	}{
		{"resized, node not there yet", resizedPod("200m", reqs("100m", ""), ours), t0, PhaseRestarting},
		{"resized, node does not report resources", resizedPod("200m", nil, ours), t0, PhaseRestarting},
		{"resized, in progress", resizedPod("200m", reqs("200m", ""), ours, cond(corev1.PodResizeInProgress, "")), t0, PhaseRestarting},
		{"resized, reported", resizedPod("200m", reqs("200m", ""), ours), t0, PhaseDone},
		{"infeasible fails at once", resizedPod("200m", reqs("100m", ""), ours, cond(corev1.PodResizePending, corev1.PodReasonInfeasible)), t0, PhaseFailed},
		{"infeasible reported for an older spec waits", withGenerations(resizedPod("200m", reqs("200m", ""), ours, condAt(corev1.PodResizePending, corev1.PodReasonInfeasible, 3)), 4, 3), t0, PhaseRestarting},
		{"infeasible reported for this spec fails", withGenerations(resizedPod("200m", reqs("100m", ""), ours, condAt(corev1.PodResizePending, corev1.PodReasonInfeasible, 4)), 4, 4), t0, PhaseFailed},
		{"deferred waits", resizedPod("200m", reqs("100m", ""), ours, cond(corev1.PodResizePending, corev1.PodReasonDeferred)), t0.Add(time.Minute), PhaseRestarting},
		{"deferred past the deadline fails", resizedPod("200m", reqs("100m", ""), ours, cond(corev1.PodResizePending, corev1.PodReasonDeferred)), t0.Add(11 * time.Minute), PhaseFailed},
		{"never reported past the deadline fails", resizedPod("200m", nil, ours), t0.Add(11 * time.Minute), PhaseFailed},
		{"created with the target, node does not report", resizedPod("200m", nil, nil), t0, PhaseDone},
		{"created with the target, node reports it", resizedPod("200m", reqs("200m", ""), nil), t0, PhaseDone},
		{"at the target, node reports other resources", resizedPod("200m", reqs("100m", ""), nil), t0, PhaseRestarting},
		{"not resized yet", resizedPod("100m", reqs("100m", ""), nil), t0, PhaseOld},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, reason := PodPhase(tc.pod, target, rolloutID, tc.now, 10*time.Minute); got != tc.want {
				t.Errorf("PodPhase = %s (%s), want %s", got, reason, tc.want)
			}
		})
	}
	// A node that reports observedGeneration must have seen the resize.
	pod := withGenerations(resizedPod("200m", reqs("200m", ""), ours), 3, 2)
	if got, _ := PodPhase(pod, target, rolloutID, t0, time.Minute); got != PhaseRestarting {
		t.Errorf("status older than the resize: PodPhase = %s, want Restarting", got)
	}
}

func TestPodPatchMetadata(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:1"},
		Labels: map[string]string{"app": "web", "tier": "front"}, Annotations: map[string]string{"team": "shop"},
		RemoveLabels: []string{"old"}, RemoveAnnotations: []string{"gone", "never-there"}}
	pod := podWith("app:1", running("app", "app:1", "sha256:one", "c1", 0, true), nil)
	pod.Labels = map[string]string{"app": "web", "tier": "back", "old": "x", "pod-template-hash": "abc"}
	pod.Annotations = map[string]string{"gone": "y", "other": "kept"}
	raw, err := PodPatch(pod, PatchInput{Target: target, Rollout: rolloutID, Now: t0})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range patchOps(t, raw) {
		if op.Path == "/metadata/annotations/refit.dev~1inplace-state" {
			continue
		}
		got = append(got, op.Op+" "+op.Path)
	}
	// Only what differs; no image op (the image is at the target); keys
	// the template never had (pod-template-hash, other) are left alone.
	want := []string{"test /metadata/uid", "add /metadata/labels/tier", "remove /metadata/labels/old", "add /metadata/annotations/team", "remove /metadata/annotations/gone"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("ops (-want +got):\n%s", d)
	}
	if target.SpecAtTarget(pod) {
		t.Error("a Pod with the old metadata is at the target")
	}
	pod.Labels = map[string]string{"app": "web", "tier": "front"}
	pod.Annotations = map[string]string{"team": "shop"}
	if !target.SpecAtTarget(pod) {
		t.Error("a Pod with the target metadata is not at the target")
	}
}

// A metadata-only update restarts nothing: it is done once the patch is
// seen, and it is quiet (outside the bound).
func TestMetadataOnlyIsQuietAndDone(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:1"}, Annotations: map[string]string{"team": "shop"}}
	pod := podWith("app:1", running("app", "app:1", "sha256:one", "c1", 0, true), nil)
	if !quietUpdate(pod, nil, target, rolloutID) {
		t.Error("a metadata-only update is not quiet")
	}
	pod.Annotations["team"] = "shop"
	pod.Annotations[StateAnnotation] = `{"rollout":"` + rolloutID + `","uid":"uid-p","revision":"r2","containers":{},"patchedAt":"2026-11-29T12:00:00Z"}`
	if got, reason := PodPhase(pod, target, rolloutID, t0, time.Minute); got != PhaseDone {
		t.Errorf("PodPhase = %s (%s), want Done", got, reason)
	}
}

// Quiet updates take none of the bound: with every Pod unavailable budget
// left, they still go, a window of maxUnavailable at a time.
func TestAssessQuiet(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:1"}, Annotations: map[string]string{"team": "shop"}}
	var pods []*corev1.Pod
	for i := range 5 {
		p := podWith("app:1", running("app", "app:1", "sha256:one", "c1", 0, true), nil)
		p.Name, p.UID = fmt.Sprintf("p%d", i), types.UID(fmt.Sprintf("uid-%d", i))
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		pods = append(pods, p)
	}
	d := Assess(PassInput{Pods: pods, Target: target, Rollout: rolloutID, Now: t0, MaxUnavailable: 2, Expected: 7})
	if len(d.Patch) != 0 || len(d.Quiet) != 2 || d.Unavailable != 2 {
		t.Errorf("patch %v quiet %v unavailable %d; want no patch, 2 quiet, 2 unavailable (the missing Pods)", names(d.Patch), names(d.Quiet), d.Unavailable)
	}
	// Two in flight (patched, cache behind): none more, and they stay available.
	d = Assess(PassInput{Pods: pods, Target: target, Rollout: rolloutID, Now: t0, MaxUnavailable: 2, Expected: 5,
		Pending: map[types.UID]bool{pods[0].UID: true, pods[1].UID: true}})
	if len(d.Quiet) != 0 || d.Unavailable != 0 {
		t.Errorf("quiet %v unavailable %d; want none while two are in flight, 0 unavailable", names(d.Quiet), d.Unavailable)
	}
}

// A Pod whose spec is at the target but that lacks the new revision's
// label (a refit killed between its resize and its patch) is not done: it
// gets a quiet patch, which takes none of the bound. Without the label the
// StatefulSet controller recreates it once the partition is released.
func TestAssessPodWithoutRevisionLabel(t *testing.T) {
	target := Target{Revision: "r2", Containers: map[string]string{"app": "app:1"},
		Resources: map[string]ContainerResources{"app": {"requests.cpu": q("200m")}}}
	target.Labels = withRevisionLabels(nil, map[string]string{"controller-revision-hash": "db-new"})
	labelled := func(name, hash string) *corev1.Pod {
		p := resizedPod("200m", reqs("200m", ""), nil, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue})
		p.Name, p.UID = name, types.UID("uid-"+name)
		p.Labels = map[string]string{"app": "db", "controller-revision-hash": hash}
		return p
	}
	cases := []struct {
		hash      string
		wantPhase Phase
		wantQuiet bool
	}{
		{hash: "db-new", wantPhase: PhaseDone},
		{hash: "db-old", wantPhase: PhaseOld, wantQuiet: true},
	}
	for _, c := range cases {
		pod := labelled("db-0", c.hash)
		d := Assess(PassInput{Pods: []*corev1.Pod{pod}, Target: target, Rollout: rolloutID, Now: t0, MaxUnavailable: 1, Expected: 1})
		if got := d.Phases[pod.UID]; got != c.wantPhase {
			t.Errorf("label %s: phase %s, want %s", c.hash, got, c.wantPhase)
		}
		if quiet := len(d.Quiet) == 1; quiet != c.wantQuiet || len(d.Patch) != 0 {
			t.Errorf("label %s: quiet %v, patch %v; want quiet %v and no restart", c.hash, names(d.Quiet), names(d.Patch), c.wantQuiet)
		}
		if d.Unavailable != 0 {
			t.Errorf("label %s: %d unavailable, want 0", c.hash, d.Unavailable)
		}
	}
	if got := withRevisionLabels(map[string]string{"app": "db"}, nil); len(got) != 1 {
		t.Errorf("no revision labels: %v", got)
	}
}

func TestSelectQuiet(t *testing.T) {
	pods := []Candidate{{Name: "a", InProgress: true}, {Name: "b", Done: true}, {Name: "c"}, {Name: "d"}, {Name: "e"}}
	if d := cmp.Diff([]string{"c", "d"}, selectQuiet(pods, 3)); d != "" {
		t.Errorf("selectQuiet (-want +got):\n%s", d)
	}
	if d := cmp.Diff([]string{"c"}, selectQuiet(pods[2:], 0)); d != "" {
		t.Errorf("selectQuiet with a bound of 0 (-want +got):\n%s", d)
	}
}

// A resumed rollout (its template already written, so the plan sees no
// removal) still removes what the first run's plan saw removed, unless the
// new target sets the key again.
func TestRememberRemovals(t *testing.T) {
	rec := &rolloutRecord{}
	first := rememberRemovals(rec, Target{RemoveAnnotations: []string{"gone"}, RemoveLabels: []string{"old"}})
	if d := cmp.Diff([]string{"gone"}, first.RemoveAnnotations); d != "" {
		t.Errorf("first run (-want +got):\n%s", d)
	}
	resumed := rememberRemovals(rec, Target{Labels: map[string]string{"old": "back"}})
	if d := cmp.Diff([]string{"gone"}, resumed.RemoveAnnotations); d != "" {
		t.Errorf("resumed: annotations to remove (-want +got):\n%s", d)
	}
	if len(resumed.RemoveLabels) != 0 || len(rec.RemoveLabels) != 0 {
		t.Errorf("resumed: labels to remove %v (record %v); want none: the target sets old again", resumed.RemoveLabels, rec.RemoveLabels)
	}
}
