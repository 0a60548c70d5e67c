package inplace

import (
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/diff"
)

var pullTarget = Target{Revision: "rev2", Containers: map[string]string{"app": "app:2"}}

// pullPod is a workload Pod on node, its spec and running image image.
func pullPod(name, node, image string, policy corev1.PullPolicy) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: image, ImagePullPolicy: policy}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", Image: image,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}}},
	}
}

// puller is a pre-pull Pod of rollout/revision on node in phase, with
// an optional waiting reason.
func puller(node, rollout, revision string, phase corev1.PodPhase, waitingReason string) *corev1.Pod {
	p := PullerPod(PullerSpec{Namespace: "ns", Workload: diff.Ref{Group: "apps", Kind: "Deployment", Name: "web"},
		Rollout: rollout, Revision: revision, Image: DefaultPullerImage,
		Pull: NodePull{Node: node, Images: []PullImage{{Image: "app:2", Policy: corev1.PullIfNotPresent}}}})
	p.CreationTimestamp = metav1.NewTime(t0)
	p.Status.Phase = phase
	if waitingReason != "" {
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "pause", State: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: waitingReason, Message: `failed to pull image "app:2": not found`}}}}
	}
	return p
}

func pullerNodes(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Spec.NodeName)
	}
	sort.Strings(out)
	return out
}

func nodesOf(creates []NodePull) []string {
	var out []string
	for _, c := range creates {
		out = append(out, c.Node)
	}
	return out
}

func keys(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func TestPlanPulls(t *testing.T) {
	old := func(name, node string) *corev1.Pod { return pullPod(name, node, "app:1", corev1.PullIfNotPresent) }
	twoNodes := []*corev1.Pod{old("a", "n1"), old("b", "n1"), old("c", "n2"), old("d", "n2")}
	sixNodes := []*corev1.Pod{old("a", "n1"), old("b", "n2"), old("c", "n3"), old("d", "n4"), old("e", "n5"), old("f", "n6")}
	type want struct {
		create  []string
		deleted []string // nodes of the pre-pull Pods deleted
		pulled  []string
		giveUp  []string
		hold    []string
		failed  string
		pulling int
		nodes   int
	}
	cases := []struct {
		name string
		in   PullInput
		want want
	}{
		{
			name: "cold nodes: a pre-pull Pod on each, every Pod held",
			in:   PullInput{Pods: twoNodes},
			want: want{create: []string{"n1", "n2"}, hold: []string{"n1", "n2"}, pulling: 2, nodes: 2},
		},
		{
			name: "a node that reports the image (spelled another way) is skipped",
			in:   PullInput{Pods: twoNodes, Nodes: map[string][]string{"n1": {"docker.io/library/app:2"}, "n2": {"app:1"}}},
			want: want{create: []string{"n2"}, hold: []string{"n2"}, pulling: 1, nodes: 1},
		},
		{
			name: "a node where a container already runs the image is skipped",
			in:   PullInput{Pods: []*corev1.Pod{old("a", "n1"), pullPod("b", "n1", "app:2", corev1.PullIfNotPresent), old("c", "n2")}},
			want: want{create: []string{"n2"}, hold: []string{"n2"}, pulling: 1, nodes: 1},
		},
		{
			name: "pull policy Always pulls even where the node reports the image",
			in: PullInput{Pods: []*corev1.Pod{pullPod("a", "n1", "app:1", corev1.PullAlways)},
				Nodes: map[string][]string{"n1": {"app:2"}}},
			want: want{create: []string{"n1"}, hold: []string{"n1"}, pulling: 1, nodes: 1},
		},
		{
			name: "pull policy Never is not pulled",
			in:   PullInput{Pods: []*corev1.Pod{pullPod("a", "n1", "app:1", corev1.PullNever)}},
			want: want{},
		},
		{
			name: "at most Limit pull at once, in the order the Pods are patched",
			in:   PullInput{Pods: sixNodes, Limit: 2, Pullers: []*corev1.Pod{puller("n1", "r", "rev2", corev1.PodPending, "")}},
			want: want{create: []string{"n2"}, hold: []string{"n1", "n2", "n3", "n4", "n5", "n6"}, pulling: 2, nodes: 6},
		},
		{
			name: "a running pre-pull Pod: pulled, deleted, its node's Pods released; the next node starts",
			in: PullInput{Pods: sixNodes, Limit: 2, Pullers: []*corev1.Pod{
				puller("n1", "r", "rev2", corev1.PodRunning, ""), puller("n2", "r", "rev2", corev1.PodPending, "ContainerCreating")}},
			want: want{create: []string{"n3"}, deleted: []string{"n1"}, pulled: []string{"n1"},
				hold: []string{"n2", "n3", "n4", "n5", "n6"}, pulling: 2, nodes: 6},
		},
		{
			name: "nodes pulled earlier in the run stay released",
			in:   PullInput{Pods: twoNodes, Pulled: map[string]bool{"n1": true}},
			want: want{create: []string{"n2"}, hold: []string{"n2"}, pulling: 1, nodes: 2},
		},
		{
			name: "a failed pull stops the rollout, naming node, image and the kubelet's message; nothing more starts",
			in: PullInput{Pods: sixNodes, Limit: 2, Pullers: []*corev1.Pod{
				puller("n1", "r", "rev2", corev1.PodPending, ""), puller("n2", "r", "rev2", corev1.PodPending, "ErrImagePull")}},
			want: want{failed: `pulling app:2 on node n2 failed: ErrImagePull: failed to pull image "app:2": not found`,
				hold: []string{"n1", "n2", "n3", "n4", "n5", "n6"}, pulling: 1, nodes: 6},
		},
		{
			name: "ImagePullBackOff fails too",
			in:   PullInput{Pods: twoNodes, Pullers: []*corev1.Pod{puller("n1", "r", "rev2", corev1.PodPending, "ImagePullBackOff")}},
			want: want{failed: `pulling app:2 on node n1 failed: ImagePullBackOff: failed to pull image "app:2": not found`,
				hold: []string{"n1", "n2"}, pulling: 0, nodes: 2},
		},
		{
			name: "a pre-pull Pod the node rejects (no room) is given up: its node's Pods go without",
			in: PullInput{Pods: twoNodes, Pullers: []*corev1.Pod{func() *corev1.Pod {
				p := puller("n1", "r", "rev2", corev1.PodFailed, "")
				p.Status.Reason, p.Status.Message = "OutOfcpu", "Node didn't have enough resource: cpu"
				return p
			}()}},
			want: want{create: []string{"n2"}, deleted: []string{"n1"}, giveUp: []string{"n1"}, hold: []string{"n2"}, pulling: 1, nodes: 2},
		},
		{
			name: "the pre-pull Pod's own pause image fails: given up there, not a failure of the new image",
			in: PullInput{Pods: twoNodes, Pullers: []*corev1.Pod{func() *corev1.Pod {
				p := puller("n1", "r", "rev2", corev1.PodPending, "ErrImagePull")
				p.Status.ContainerStatuses[0].State.Waiting.Message = `failed to pull image "` + DefaultPullerImage + `": no route`
				return p
			}()}},
			want: want{create: []string{"n2"}, deleted: []string{"n1"}, giveUp: []string{"n1"}, hold: []string{"n2"}, pulling: 1, nodes: 2},
		},
		{
			name: "pre-pull Pods of another rollout or revision are left over: deleted",
			in: PullInput{Pods: twoNodes, Pullers: []*corev1.Pod{
				puller("n1", "old", "rev1", corev1.PodRunning, ""), puller("n2", "r", "rev1", corev1.PodPending, "")}},
			want: want{create: []string{"n1", "n2"}, deleted: []string{"n1", "n2"}, hold: []string{"n1", "n2"}, pulling: 2, nodes: 2},
		},
		{
			name: "created but not in the cache yet: still pulling, not created again",
			in:   PullInput{Pods: twoNodes, Created: map[string]time.Time{"n1": t0.Add(-time.Second)}},
			want: want{create: []string{"n2"}, hold: []string{"n1", "n2"}, pulling: 2, nodes: 2},
		},
		{
			name: "created long ago and gone unseen: given up, not created again",
			in:   PullInput{Pods: twoNodes, Created: map[string]time.Time{"n1": t0.Add(-time.Minute)}},
			want: want{create: []string{"n2"}, giveUp: []string{"n1"}, hold: []string{"n2"}, pulling: 1, nodes: 2},
		},
		{
			name: "not running within the timeout (slow, or a runtime without image volumes): given up there",
			in: PullInput{Pods: twoNodes, Timeout: 30 * time.Second, Now: t0.Add(time.Minute),
				Pullers: []*corev1.Pod{puller("n1", "r", "rev2", corev1.PodPending, "")}},
			want: want{create: []string{"n2"}, deleted: []string{"n1"}, giveUp: []string{"n1"}, hold: []string{"n2"}, pulling: 1, nodes: 2},
		},
		{
			name: "pulling within the timeout: still held",
			in: PullInput{Pods: twoNodes, Timeout: 30 * time.Second, Now: t0.Add(20 * time.Second),
				Pullers: []*corev1.Pod{puller("n1", "r", "rev2", corev1.PodPending, "")}},
			want: want{create: []string{"n2"}, hold: []string{"n1", "n2"}, pulling: 2, nodes: 2},
		},
		{
			name: "every Pod already patched: nothing held, pre-pull Pods deleted",
			in: PullInput{Pods: []*corev1.Pod{pullPod("a", "n1", "app:2", ""), pullPod("b", "n2", "app:2", "")},
				Pullers: []*corev1.Pod{puller("n1", "r", "rev2", corev1.PodPending, "")}},
			want: want{deleted: []string{"n1"}},
		},
		{
			name: "StatefulSet Pods: the highest ordinal's node first",
			in: PullInput{Pods: []*corev1.Pod{old("s-0", "n1"), old("s-1", "n2"), old("s-2", "n3")}, Limit: 1,
				Ordinal: func(p *corev1.Pod) int { return int(p.Name[2] - '0') }},
			want: want{create: []string{"n3"}, hold: []string{"n1", "n2", "n3"}, pulling: 1, nodes: 3},
		},
		{
			name: "Pods the rollout may not touch need nothing",
			in:   PullInput{Pods: twoNodes, Eligible: func(p *corev1.Pod) bool { return p.Spec.NodeName == "n2" }},
			want: want{create: []string{"n2"}, hold: []string{"n2"}, pulling: 1, nodes: 1},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Target, in.Rollout, in.Revision = pullTarget, "r", "rev2"
			if in.Now.IsZero() {
				in.Now = t0
			}
			if in.Limit == 0 {
				in.Limit = 4
			}
			d := PlanPulls(in)
			got := want{create: nodesOf(d.Create), deleted: pullerNodes(d.Delete), pulled: d.Pulled, hold: keys(d.Hold),
				pulling: d.Pulling, nodes: d.Nodes}
			for node := range d.GiveUp {
				got.giveUp = append(got.giveUp, node)
			}
			sort.Strings(got.giveUp)
			if d.Failed != nil {
				got.failed = d.Failed.String()
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(want{})); diff != "" {
				t.Errorf("PlanPulls (-want +got):\n%s", diff)
			}
		})
	}
}

// Pods on a node that is still pulling are not patched; the budget goes to
// Pods whose node has the images.
func TestAssessHoldsPodsOfPullingNodes(t *testing.T) {
	var pods []*corev1.Pod
	for i, node := range []string{"n1", "n1", "n2", "n2"} {
		p := fleetPod(i, oldReady, false)
		p.Spec.NodeName = node
		pods = append(pods, p)
	}
	in := PassInput{Pods: pods, Target: fleetTarget, Rollout: rolloutID, Now: t0, MaxUnavailable: 2, Expected: 4}
	all := Assess(in)
	in.Hold = holdOn(map[string]bool{"n1": true})
	held := Assess(in)
	var got []string
	for _, p := range held.Patch {
		got = append(got, p.Name+"@"+p.Spec.NodeName)
	}
	if diff := cmp.Diff([]string{"p02@n2", "p03@n2"}, got); diff != "" {
		t.Errorf("patched with n1 pulling (-want +got):\n%s", diff)
	}
	if len(all.Patch) != 2 || all.Patch[0].Spec.NodeName != "n1" {
		t.Errorf("without a hold: want the first two Pods (on n1), got %d", len(all.Patch))
	}
	in.Hold = holdOn(map[string]bool{"n1": true, "n2": true})
	if d := Assess(in); len(d.Patch) != 0 || d.Finished {
		t.Errorf("every node pulling: want nothing patched and not finished, got %d patched, finished %v", len(d.Patch), d.Finished)
	}
}

func TestPullerPod(t *testing.T) {
	from := pullPod("web-1", "n1", "app:1", corev1.PullIfNotPresent)
	from.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "regcred"}}
	from.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	from.Spec.NodeSelector = map[string]string{"pool": "web"}
	from.Spec.Affinity = &corev1.Affinity{
		NodeAffinity:    &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{}},
		PodAntiAffinity: &corev1.PodAntiAffinity{},
	}
	owner := &metav1.OwnerReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "u1"}
	p := PullerPod(PullerSpec{Namespace: "ns", Workload: diff.Ref{Group: "apps", Kind: "Deployment", Name: "web"}, Owner: owner,
		Rollout: "r1", Revision: "rev2", Image: "registry.k8s.io/pause:3.10", Deadline: 10 * time.Minute,
		Pull: NodePull{Node: "n1", From: from, Images: []PullImage{{Image: "app:2", Policy: corev1.PullIfNotPresent}, {Image: "side:3", Policy: corev1.PullAlways}}}})

	checks := []struct {
		what string
		ok   bool
	}{
		{"pinned to its node", p.Spec.NodeName == "n1"},
		{"labels: rollout, revision, workload", p.Labels[PullRolloutLabel] == "r1" && p.Labels[PullRevisionLabel] == "rev2" && p.Labels[PullWorkloadLabel] == "deployment.web"},
		{"only refit's label keys", len(p.Labels) == 3},
		{"workload annotation", p.Annotations[PullWorkloadAnnotation] == "Deployment/web"},
		{"a non-controller owner reference", len(p.OwnerReferences) == 1 && p.OwnerReferences[0].Controller == nil},
		{"one pause container", len(p.Spec.Containers) == 1 && p.Spec.Containers[0].Image == "registry.k8s.io/pause:3.10"},
		{"each image a volume with its pull policy", len(p.Spec.Volumes) == 2 && p.Spec.Volumes[0].Image.Reference == "app:2" &&
			p.Spec.Volumes[1].Image.Reference == "side:3" && p.Spec.Volumes[1].Image.PullPolicy == corev1.PullAlways},
		{"each volume mounted", len(p.Spec.Containers[0].VolumeMounts) == 2},
		{"tiny requests", p.Spec.Containers[0].Resources.Requests.Cpu().MilliValue() == 1},
		{"restricted: non-root", *p.Spec.SecurityContext.RunAsNonRoot && *p.Spec.Containers[0].SecurityContext.RunAsNonRoot},
		{"restricted: no privilege escalation", !*p.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation},
		{"restricted: capabilities dropped", p.Spec.Containers[0].SecurityContext.Capabilities.Drop[0] == "ALL"},
		{"restricted: seccomp", p.Spec.SecurityContext.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault},
		{"the workload's pull secrets", len(p.Spec.ImagePullSecrets) == 1 && p.Spec.ImagePullSecrets[0].Name == "regcred"},
		{"the workload's tolerations", len(p.Spec.Tolerations) == 1 && p.Spec.Tolerations[0].Key == "dedicated"},
		{"the workload's node placement, not its Pod affinity", p.Spec.NodeSelector["pool"] == "web" && p.Spec.Affinity.NodeAffinity != nil && p.Spec.Affinity.PodAntiAffinity == nil},
		{"a deadline the kubelet enforces", p.Spec.ActiveDeadlineSeconds != nil && *p.Spec.ActiveDeadlineSeconds == 660},
		{"no service account token", !*p.Spec.AutomountServiceAccountToken},
		{"a name that is a hostname", len(p.Name) <= 63 && strings.HasPrefix(p.Name, "refit-pull-web-")},
	}
	for _, c := range checks {
		if !c.ok {
			t.Errorf("pre-pull Pod: want %s; got %+v", c.what, p)
		}
	}
	again := PullerPod(PullerSpec{Workload: diff.Ref{Kind: "Deployment", Name: "web"}, Rollout: "r1", Revision: "rev2", Pull: NodePull{Node: "n1"}})
	other := PullerPod(PullerSpec{Workload: diff.Ref{Kind: "Deployment", Name: "web"}, Rollout: "r1", Revision: "rev2", Pull: NodePull{Node: "n2"}})
	if again.Name != p.Name || other.Name == p.Name {
		t.Errorf("names: want the same for the same rollout, revision and node and another for another node; got %s, %s, %s", p.Name, again.Name, other.Name)
	}
}

func TestPullNames(t *testing.T) {
	long := strings.Repeat("w", 80)
	if n := pullerName(long, "r", "v", "node"); len(n) > 63 {
		t.Errorf("pullerName of a long workload: %d characters, want at most 63: %s", len(n), n)
	}
	for _, tc := range []struct{ ref diff.Ref }{{diff.Ref{Kind: "Deployment", Name: long}}, {diff.Ref{Kind: "StatefulSet", Name: "db.main"}}} {
		v := pullWorkloadValue(tc.ref)
		if len(v) > 63 || !labelValueRE.MatchString(v) {
			t.Errorf("pullWorkloadValue(%s) = %q: not a label value", tc.ref.Name, v)
		}
	}
}

func TestPullerImageFor(t *testing.T) {
	cases := []struct {
		name       string
		configured string
		node       []string
		want       string
	}{
		{"configured wins", "my/pause:1", []string{"registry.k8s.io/pause:3.10"}, "my/pause:1"},
		{"the node's sandbox image", "", []string{"nginx:1.27", "registry.k8s.io/pause:3.9", "registry.k8s.io/pause@sha256:abc"}, "registry.k8s.io/pause:3.9"},
		{"the newest of several", "", []string{"registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.10"}, "registry.k8s.io/pause:3.9"},
		{"not a pause image", "", []string{"example.com/pauser:1", "example.com/pause-x:1"}, DefaultPullerImage},
		{"unknown node", "", nil, DefaultPullerImage},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := pullerImageFor(tc.configured, tc.node); got != tc.want {
				t.Errorf("pullerImageFor = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLeftoverPuller(t *testing.T) {
	pod := func(phase corev1.PodPhase) *corev1.Pod {
		p := puller("n1", "r1", "rev2", phase, "")
		return p
	}
	cases := []struct {
		name     string
		pod      *corev1.Pod
		active   bool
		found    bool
		recordID string
		want     bool
	}{
		{"a rollout of this process pulls with it", pod(corev1.PodPending), true, true, "", false},
		{"its rollout's record is gone: the rollout ended", pod(corev1.PodRunning), false, true, "", true},
		{"another rollout's record", pod(corev1.PodRunning), false, true, "r2", true},
		{"its rollout is still recorded: a resumed rollout deals with it", pod(corev1.PodPending), false, true, "r1", false},
		{"its workload is gone", pod(corev1.PodPending), false, false, "", true},
		{"ended (its deadline)", pod(corev1.PodFailed), false, true, "r1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := leftoverPuller(tc.pod, tc.active, tc.found, tc.recordID); got != tc.want {
				t.Errorf("leftoverPuller = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPullTimeout(t *testing.T) {
	for _, tc := range []struct {
		opts     PrePullOptions
		deadline time.Duration
		want     time.Duration
	}{
		{PrePullOptions{}, 10 * time.Minute, DefaultPullTimeout},
		{PrePullOptions{}, time.Minute, time.Minute},
		{PrePullOptions{Timeout: 5 * time.Minute}, 10 * time.Minute, 5 * time.Minute},
		{PrePullOptions{}, 0, DefaultPullTimeout},
	} {
		if got := tc.opts.pullTimeout(tc.deadline); got != tc.want {
			t.Errorf("pullTimeout(%+v, %s) = %s, want %s", tc.opts, tc.deadline, got, tc.want)
		}
	}
}

func TestPullLimit(t *testing.T) {
	for _, tc := range []struct {
		opts        PrePullOptions
		bound, want int
	}{
		{PrePullOptions{}, 1, 4}, {PrePullOptions{}, 25, 50}, {PrePullOptions{Limit: 3}, 25, 3},
	} {
		if got := tc.opts.pullLimit(tc.bound); got != tc.want {
			t.Errorf("pullLimit(%+v, %d) = %d, want %d", tc.opts, tc.bound, got, tc.want)
		}
	}

}
