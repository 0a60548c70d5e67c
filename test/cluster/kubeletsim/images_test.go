package kubeletsim

import (
	"regexp"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var bad = regexp.MustCompile(`does-not-exist|:bad($|[-_.])`)

func pod(name string, phase corev1.PodPhase, images ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.PodStatus{Phase: phase}}
	for i, image := range images {
		c := string(rune('a' + i))
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: image})
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: c, Image: image,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}})
	}
	return p
}

func withVolume(p *corev1.Pod, ref string) *corev1.Pod {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v", VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: ref}}})
	return p
}

// patched is p after an in-place image change of container "a" to image,
// before the container restarted.
func patched(p *corev1.Pod, image string) *corev1.Pod {
	p.Spec.Containers[0].Image = image
	return p
}

func TestImagesNeeded(t *testing.T) {
	prefixed := pod("p", corev1.PodRunning, "nginx:1")
	prefixed.Annotations = map[string]string{reportPrefixAnnotation: "docker.io/library/"}
	prefixed.Status.ContainerStatuses[0].Image = "docker.io/library/nginx:1"
	waiting := pod("p", corev1.PodRunning, "nginx:1", "side:1")
	waiting.Status.ContainerStatuses[1].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{"new pod: containers and image volumes", withVolume(pod("p", corev1.PodPending, "nginx:1", "side:1"), "data:1"), []string{"nginx:1", "side:1", "data:1"}},
		{"new pod: a bad image is not pulled", withVolume(pod("p", corev1.PodPending, "nginx:bad"), "data:bad"), nil},
		{"running pod: nothing", pod("p", corev1.PodRunning, "nginx:1"), nil},
		{"running pod: the new image of a patched container", patched(pod("p", corev1.PodRunning, "nginx:1", "side:1"), "nginx:2"), []string{"nginx:2"}},
		{"running pod: a container waiting to restart", waiting, []string{"side:1"}},
		{"running pod reporting a prefix: nothing", prefixed, nil},
		{"running pod: its volumes are not pulled again", withVolume(pod("p", corev1.PodRunning, "nginx:1"), "data:1"), nil},
		{"finished pod: nothing", pod("p", corev1.PodSucceeded, "nginx:1"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ImagesNeeded(tc.pod, bad)); diff != "" {
				t.Errorf("ImagesNeeded (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPullDelay(t *testing.T) {
	node := func(ann string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
		if ann != "" {
			n.Annotations = map[string]string{PullDelayAnnotation: ann}
		}
		return n
	}
	for _, tc := range []struct {
		name    string
		node    *corev1.Node
		want    time.Duration
		wantErr bool
	}{
		{"default", node(""), time.Second, false},
		{"annotation", node("4s"), 4 * time.Second, false},
		{"annotation zero", node("0s"), 0, false},
		{"not a duration", node("soon"), time.Second, true},
		{"negative", node("-1s"), time.Second, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PullDelay(tc.node, time.Second)
			if got != tc.want || (err != nil) != tc.wantErr {
				t.Errorf("PullDelay = %s, %v; want %s, error %t", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestPlanImages(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	nodeWith := func(images ...string) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
		for _, image := range images {
			n.Status.Images = append(n.Status.Images, ContainerImage(image))
		}
		return n
	}
	marked := func(p *corev1.Pod, since time.Time) *corev1.Pod {
		p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: PullingCondition, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(since)})
		return p
	}
	names := func(pods []*corev1.Pod) []string {
		var out []string
		for _, p := range pods {
			out = append(out, p.Name)
		}
		return out
	}
	type want struct {
		Pulled       []string
		Pulls        map[string]time.Time
		Mark, Unmark []string
		Next         time.Time
	}
	for _, tc := range []struct {
		name  string
		node  *corev1.Node
		pods  []*corev1.Pod
		pulls map[string]time.Time
		delay time.Duration
		want  want
	}{
		{
			name:  "a cold image starts one pull for every Pod that waits for it",
			node:  nodeWith(),
			pods:  []*corev1.Pod{pod("p1", corev1.PodPending, "nginx:1"), pod("p2", corev1.PodPending, "nginx:1")},
			delay: 4 * time.Second,
			want:  want{Pulls: map[string]time.Time{"nginx:1": now.Add(4 * time.Second)}, Mark: []string{"p1", "p2"}, Next: now.Add(4 * time.Second)},
		},
		{
			name:  "an image the node has is not pulled again",
			node:  nodeWith("nginx:1"),
			pods:  []*corev1.Pod{pod("p1", corev1.PodPending, "nginx:1")},
			delay: 4 * time.Second,
			want:  want{Pulls: map[string]time.Time{}},
		},
		{
			name: "with no pull time the image is on the node at once and nobody waits",
			node: nodeWith(),
			pods: []*corev1.Pod{withVolume(pod("p1", corev1.PodPending, "nginx:1"), "data:1")},
			want: want{Pulled: []string{"data:1", "nginx:1"}, Pulls: map[string]time.Time{}},
		},
		{
			name:  "a pull that ended is written to the node and its Pods go on",
			node:  nodeWith(),
			pods:  []*corev1.Pod{marked(pod("p1", corev1.PodPending, "nginx:1"), now.Add(-4*time.Second))},
			pulls: map[string]time.Time{"nginx:1": now},
			delay: 4 * time.Second,
			want:  want{Pulled: []string{"nginx:1"}, Pulls: map[string]time.Time{}, Unmark: []string{"p1"}},
		},
		{
			name:  "a Pod marked by an earlier run dates its pull from the mark",
			node:  nodeWith(),
			pods:  []*corev1.Pod{marked(pod("p1", corev1.PodPending, "nginx:1"), now.Add(-3*time.Second))},
			delay: 4 * time.Second,
			want:  want{Pulls: map[string]time.Time{"nginx:1": now.Add(time.Second)}, Next: now.Add(time.Second)},
		},
		{
			name:  "an in-place change waits for the new image only",
			node:  nodeWith("nginx:1"),
			pods:  []*corev1.Pod{patched(pod("p1", corev1.PodRunning, "nginx:1"), "nginx:2"), pod("p2", corev1.PodRunning, "nginx:1")},
			delay: time.Second,
			want:  want{Pulls: map[string]time.Time{"nginx:2": now.Add(time.Second)}, Mark: []string{"p1"}, Next: now.Add(time.Second)},
		},
		{
			name:  "a bad image is never pulled: the Stages fail it",
			node:  nodeWith(),
			pods:  []*corev1.Pod{withVolume(pod("p1", corev1.PodPending, "nginx:1"), "data:bad")},
			delay: time.Second,
			want:  want{Pulls: map[string]time.Time{"nginx:1": now.Add(time.Second)}, Mark: []string{"p1"}, Next: now.Add(time.Second)},
		},
		{
			name:  "an image removed from the node's status is cold again",
			node:  nodeWith("other:1"),
			pods:  []*corev1.Pod{pod("p1", corev1.PodPending, "nginx:1")},
			delay: time.Second,
			want:  want{Pulls: map[string]time.Time{"nginx:1": now.Add(time.Second)}, Mark: []string{"p1"}, Next: now.Add(time.Second)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := PlanImages(tc.node, tc.pods, tc.pulls, now, tc.delay, bad)
			got := want{Pulled: plan.Pulled, Pulls: plan.Pulls, Mark: names(plan.Mark), Unmark: names(plan.Unmark), Next: plan.Next}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("PlanImages (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWithImages(t *testing.T) {
	node := &corev1.Node{Status: corev1.NodeStatus{Images: []corev1.ContainerImage{ContainerImage("nginx:1")}}}
	got := WithImages(node, []string{"nginx:1", "data:1"})
	if len(got) != 2 || got[1].Names[0] != "data:1" || len(node.Status.Images) != 1 {
		t.Errorf("WithImages = %+v (node now %d images), want nginx:1 then data:1, the node untouched", got, len(node.Status.Images))
	}
}
