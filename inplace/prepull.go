package inplace

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/refit-gitops/refit/diff"
)

// Pre-pull: before refit patches a Pod, the Pod's node gets the new images
// from a short-lived pre-pull Pod pinned to it, which runs only a pause
// image and mounts each new image as an image volume (GA in 1.36): the
// kubelet pulls every image volume before it starts the container, so
// Running means pulled and a failed pull shows as the container's waiting
// reason. The rollout's window is then only the restart.

// PrePullAnnotation on a workload in Git: "disabled" turns pre-pull off.
const PrePullAnnotation = "refit.dev/pre-pull"

// Labels and annotations on pre-pull Pods. The labels are refit's own
// keys only, so no workload selector can match (and adopt) a pre-pull Pod.
const (
	// PullRolloutLabel holds the rollout's ID.
	PullRolloutLabel = "refit.dev/pre-pull-rollout"
	// PullRevisionLabel holds the target's revision (a hash of its images).
	PullRevisionLabel = "refit.dev/pre-pull-revision"
	// PullWorkloadLabel names the workload (kind.name, shortened with a
	// hash where it would not fit a label value).
	PullWorkloadLabel = "refit.dev/pre-pull-workload"
	// PullWorkloadAnnotation names the workload in full: Kind/name.
	PullWorkloadAnnotation = "refit.dev/pre-pull-workload"
)

// DefaultPullerImage is the image a pre-pull Pod runs where neither the
// options nor the node (a pause image it reports) name one.
const DefaultPullerImage = "registry.k8s.io/pause:3.10.1"

// PrePullOptions are the pre-pull settings of a rollout; the zero value
// pre-pulls with the defaults.
type PrePullOptions struct {
	// Disabled: patch without pre-pulling (the kubelet pulls while the
	// container is down).
	Disabled bool
	// Image is what pre-pull Pods run (""; a pause image the node reports,
	// else DefaultPullerImage).
	Image string
	// Limit is how many pre-pull Pods may pull at once (0: max(4, 2 ×
	// maxUnavailable)); never more than one per node.
	Limit int
	// Timeout: a node whose pre-pull Pod does not run by then is given up,
	// and its Pods patched as without pre-pull (0: DefaultPullTimeout, at
	// most the progress deadline).
	Timeout time.Duration
}

// DefaultPullTimeout bounds a pre-pull Pod's wait for its images.
const DefaultPullTimeout = 2 * time.Minute

// pullTimeout is the Timeout in force under a progress deadline.
func (o PrePullOptions) pullTimeout(deadline time.Duration) time.Duration {
	t := o.Timeout
	if t <= 0 {
		t = DefaultPullTimeout
	}
	if deadline > 0 && deadline < t {
		t = deadline
	}
	return t
}

// pullLimit is the cap on pre-pull Pods pulling at once.
func (o PrePullOptions) pullLimit(maxUnavailable int) int {
	if o.Limit > 0 {
		return o.Limit
	}
	return max(4, 2*maxUnavailable)
}

// PrePullDisabled reads PrePullAnnotation from a workload's annotations.
func PrePullDisabled(ann map[string]string) bool {
	return strings.EqualFold(ann[PrePullAnnotation], "disabled")
}

// PullImage is one image to pull and the pull policy of the container that
// will run it.
type PullImage struct {
	Image  string
	Policy corev1.PullPolicy
}

// NodePull is a pre-pull Pod to create: the node, its images, and a Pod of
// the workload on that node whose pull secrets, tolerations and placement
// it copies.
type NodePull struct {
	Node   string
	Images []PullImage
	From   *corev1.Pod
}

// PullInput is everything the pull decision of one pass depends on.
type PullInput struct {
	// Pods are the workload's Pods.
	Pods []*corev1.Pod
	// Eligible and Ordinal as in PassInput (nil: all, -1).
	Eligible func(*corev1.Pod) bool
	Ordinal  func(*corev1.Pod) int
	Target   Target
	// Rollout and Revision: pre-pull Pods of another rollout or revision
	// are leftovers.
	Rollout, Revision string
	// Nodes are the images each node reports (status.images names); a node
	// missing from it is unknown (nothing is skipped there).
	Nodes map[string][]string
	// Pullers are the workload's pre-pull Pods, as last seen.
	Pullers []*corev1.Pod
	// Pulled are nodes where this run saw its pre-pull Pod running: they
	// have the images. GivenUp are nodes where pre-pull is not possible
	// (the kubelet pulls at the restart there), with the reason.
	Pulled  map[string]bool
	GivenUp map[string]string
	// Created are nodes this run created a pre-pull Pod on, and when: one
	// the cache does not show yet is still pulling.
	Created map[string]time.Time
	// Limit on pre-pull Pods pulling at once.
	Limit int
	Now   time.Time
	// Timeout: a pre-pull Pod not running by then is given up.
	Timeout time.Duration
}

// PullFailure is a pull the kubelet failed: the rollout stops. Pod is the
// pre-pull Pod where the kubelet's message can be read.
type PullFailure struct {
	Pod, Node, Image, Reason string
}

func (f *PullFailure) String() string {
	return fmt.Sprintf("pulling %s on node %s failed: %s", f.Image, f.Node, f.Reason)
}

// PullDecision is the pull step of a pass.
type PullDecision struct {
	// Create are pre-pull Pods to start now, within the limits.
	Create []NodePull
	// Delete are pre-pull Pods that are done (pulled, ended), no longer
	// needed, or leftovers of another rollout or revision.
	Delete []*corev1.Pod
	// Pulled are nodes whose pre-pull Pod runs now: the images are there.
	Pulled []string
	// GiveUp are nodes where pre-pull turned out not possible, by reason.
	GiveUp map[string]string
	// Hold are nodes whose Pods must not be patched yet: their images
	// are being pulled, or about to be.
	Hold map[string]bool
	// Failed stops the rollout.
	Failed *PullFailure
	// Images are the images that some node needs; Nodes how many nodes
	// need a pull (pulled ones included), Pulling how many pull now.
	Images  []string
	Nodes   int
	Pulling int
}

// pullFailureReasons are waiting reasons of a pull that will not succeed
// by waiting; other reasons are the pre-pull Pod's own trouble.
var pullFailureReasons = map[string]bool{
	"ErrImagePull":              true,
	"ImagePullBackOff":          true,
	"InvalidImageName":          true,
	"ErrImageNeverPull":         true,
	"RegistryUnavailable":       true,
	"SignatureValidationFailed": true,
	"ImageInspectError":         true,
}

// nodeNeed is what one node must pull.
type nodeNeed struct {
	node   string
	order  int
	images map[string]corev1.PullPolicy
	from   *corev1.Pod
}

// PlanPulls decides a pass's pre-pull step: which nodes need which target
// images (the images of old Pods' containers that change, less what the
// node reports or already runs), which pre-pull Pods are done, failed or
// left over, where to start pulling next (in the order the Pods will be
// patched, one pre-pull Pod per node, at most Limit pulling), and which
// nodes' Pods must wait. It is a pure function; the caller writes.
func PlanPulls(in PullInput) PullDecision {
	out := PullDecision{GiveUp: map[string]string{}, Hold: map[string]bool{}}
	needs := nodeNeeds(in)
	images := map[string]bool{}
	for _, n := range needs {
		for img := range n.images {
			images[img] = true
		}
	}
	for img := range images {
		out.Images = append(out.Images, img)
	}
	sort.Strings(out.Images)
	out.Nodes = len(needs)

	// The pre-pull Pods: one per node; anything else goes.
	seen := map[string]bool{}
	pulling := map[string]bool{}
	var failures []*PullFailure
	for _, p := range sortedPullers(in.Pullers) {
		if p.DeletionTimestamp != nil {
			continue
		}
		node := p.Spec.NodeName
		if p.Labels[PullRolloutLabel] != in.Rollout || p.Labels[PullRevisionLabel] != in.Revision || seen[node] {
			out.Delete = append(out.Delete, p)
			continue
		}
		seen[node] = true
		state, reason, image := pullerState(p, in.Now, in.Timeout)
		switch state {
		case pullDone:
			out.Pulled = append(out.Pulled, node)
			out.Delete = append(out.Delete, p)
		case pullEnded:
			out.GiveUp[node] = reason
			out.Delete = append(out.Delete, p)
		case pullFailed:
			if needs[node] == nil {
				out.Delete = append(out.Delete, p) // nothing there needs it any more
				continue
			}
			failures = append(failures, &PullFailure{Pod: p.Name, Node: node, Image: image, Reason: reason})
		default:
			if needs[node] == nil || in.Pulled[node] || in.GivenUp[node] != "" {
				out.Delete = append(out.Delete, p)
				continue
			}
			pulling[node] = true
		}
	}
	if len(failures) > 0 {
		sort.Slice(failures, func(i, j int) bool { return orderOf(needs, failures[i].Node) < orderOf(needs, failures[j].Node) })
		out.Failed = failures[0]
	}
	pulled := map[string]bool{}
	for _, node := range out.Pulled {
		pulled[node] = true
	}

	// Nodes in the order their Pods will be patched.
	ordered := make([]*nodeNeed, 0, len(needs))
	for _, n := range needs {
		ordered = append(ordered, n)
	}
	sort.Slice(ordered, func(i, j int) bool { return ordered[i].order < ordered[j].order })
	for _, n := range ordered {
		node := n.node
		switch {
		case in.Pulled[node] || pulled[node] || in.GivenUp[node] != "" || out.GiveUp[node] != "":
			continue // the Pods there may be patched
		case seen[node]:
		case !in.Created[node].IsZero() && in.Now.Sub(in.Created[node]) < pullerSeenWithin:
			pulling[node] = true // created; the cache does not show it yet
		case !in.Created[node].IsZero():
			// One pre-pull Pod per node per rollout: it went away unseen.
			out.GiveUp[node] = "its pre-pull Pod went away"
			continue
		}
		out.Hold[node] = true
	}
	out.Pulling = len(pulling)
	if out.Failed != nil {
		return out
	}
	for _, n := range ordered {
		if out.Pulling >= in.Limit {
			break
		}
		if !out.Hold[n.node] || pulling[n.node] || seen[n.node] {
			continue
		}
		out.Create = append(out.Create, NodePull{Node: n.node, Images: n.pullImages(), From: n.from})
		out.Pulling++
	}
	return out
}

// pullerSeenWithin is how long a created pre-pull Pod may be missing from
// the cache before refit takes it as gone.
const pullerSeenWithin = 10 * time.Second

func orderOf(needs map[string]*nodeNeed, node string) int {
	if n := needs[node]; n != nil {
		return n.order
	}
	return int(^uint(0) >> 1)
}

func sortedPullers(pullers []*corev1.Pod) []*corev1.Pod {
	out := append([]*corev1.Pod(nil), pullers...)
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreationTimestamp.Equal(&out[j].CreationTimestamp) {
			return out[i].CreationTimestamp.Before(&out[j].CreationTimestamp)
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func (n *nodeNeed) pullImages() []PullImage {
	out := make([]PullImage, 0, len(n.images))
	for img, policy := range n.images {
		out = append(out, PullImage{Image: img, Policy: policy})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Image < out[j].Image })
	return out
}

// nodeNeeds lists, per node, the target images its old Pods will need that
// it does not have yet. A node has an image it reports in status.images or
// that a running container there reports; an image whose container pulls
// Always is pulled all the same (the tag may have moved), one whose
// container pulls Never is not pulled at all.
func nodeNeeds(in PullInput) map[string]*nodeNeed {
	present := map[string]map[string]bool{}
	on := func(node string) map[string]bool {
		if present[node] == nil {
			present[node] = map[string]bool{}
			for _, name := range in.Nodes[node] {
				present[node][NormalizeImage(name)] = true
			}
		}
		return present[node]
	}
	for _, pod := range in.Pods {
		if pod.Spec.NodeName == "" {
			continue
		}
		images := on(pod.Spec.NodeName)
		for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses} {
			for _, cs := range list {
				if cs.State.Running != nil && cs.Image != "" {
					images[NormalizeImage(cs.Image)] = true
				}
			}
		}
	}
	old := make([]*corev1.Pod, 0, len(in.Pods))
	for _, pod := range in.Pods {
		if pod.DeletionTimestamp != nil || pod.Spec.NodeName == "" || in.Eligible != nil && !in.Eligible(pod) || in.Target.SpecAtTarget(pod) {
			continue
		}
		old = append(old, pod)
	}
	ordinal := func(p *corev1.Pod) int {
		if in.Ordinal == nil {
			return -1
		}
		return in.Ordinal(p)
	}
	// The order SelectBatch patches in: highest ordinal first, then names.
	sort.Slice(old, func(i, j int) bool {
		if a, b := ordinal(old[i]), ordinal(old[j]); a != b {
			return a > b
		}
		return old[i].Name < old[j].Name
	})
	needs := map[string]*nodeNeed{}
	for i, pod := range old {
		node := pod.Spec.NodeName
		add := func(images map[string]string, init bool) {
			for name, img := range images {
				cur, idx, ok := specImage(pod, name, init)
				if !ok || cur == img {
					continue
				}
				var policy corev1.PullPolicy
				if init {
					policy = pod.Spec.InitContainers[idx].ImagePullPolicy
				} else {
					policy = pod.Spec.Containers[idx].ImagePullPolicy
				}
				if policy == corev1.PullNever || policy != corev1.PullAlways && on(node)[NormalizeImage(img)] {
					continue
				}
				n := needs[node]
				if n == nil {
					n = &nodeNeed{node: node, order: i, images: map[string]corev1.PullPolicy{}, from: pod}
					needs[node] = n
				}
				if policy == "" {
					policy = corev1.PullIfNotPresent
				}
				if n.images[img] != corev1.PullAlways {
					n.images[img] = policy
				}
			}
		}
		add(in.Target.Containers, false)
		add(in.Target.Init, true)
	}
	return needs
}

type pullState int

const (
	pullPulling pullState = iota
	pullDone
	pullFailed // the pull failed: the image cannot be had
	pullEnded  // the pre-pull Pod ended for a reason of its own
)

// pullerState reads a pre-pull Pod: Running means every image volume was
// pulled (the kubelet pulls them before it starts the container); a pull
// failure waiting reason means the image cannot be had; an ended Pod (the
// node rejected it: no room; the deadline; an eviction) or one that does not
// run within timeout says nothing about the images. It also returns the
// reason and, for a failure, the image.
func pullerState(p *corev1.Pod, now time.Time, timeout time.Duration) (pullState, string, string) {
	for _, cs := range p.Status.ContainerStatuses {
		w := cs.State.Waiting
		if w == nil || !pullFailureReasons[w.Reason] {
			continue
		}
		image := failedImage(p, w.Message)
		if image == "" {
			// Its own (pause) image, not one of the workload's: say nothing
			// of the new images, and go without pre-pull on that node.
			return pullEnded, fmt.Sprintf("its pre-pull Pod's own image cannot be pulled: %s: %s", w.Reason, w.Message), ""
		}
		return pullFailed, fmt.Sprintf("%s: %s", w.Reason, w.Message), image
	}
	switch p.Status.Phase {
	case corev1.PodRunning, corev1.PodSucceeded:
		return pullDone, "", ""
	case corev1.PodFailed:
		reason := strings.TrimSpace(p.Status.Reason + " " + p.Status.Message)
		if reason == "" {
			reason = "it failed"
		}
		return pullEnded, "its pre-pull Pod ended: " + reason, ""
	}
	if timeout > 0 && now.Sub(p.CreationTimestamp.Time) > timeout {
		// Slow, or a runtime that cannot mount image volumes (the Pod then
		// waits in ContainerCreating for ever): not a verdict on the image.
		return pullEnded, fmt.Sprintf("its pre-pull Pod did not run within %s", timeout), ""
	}
	return pullPulling, "", ""
}

// failedImage is the volume image a kubelet's message names; "" where it
// names the Pod's own container image instead; else all volume images.
func failedImage(p *corev1.Pod, message string) string {
	images := volumeImages(p)
	for _, img := range images {
		if strings.Contains(message, img) {
			return img
		}
	}
	for _, c := range p.Spec.Containers {
		if c.Image != "" && strings.Contains(message, c.Image) {
			return ""
		}
	}
	return strings.Join(images, ", ")
}

func volumeImages(p *corev1.Pod) []string {
	var out []string
	for _, v := range p.Spec.Volumes {
		if v.Image != nil {
			out = append(out, v.Image.Reference)
		}
	}
	return out
}

// PullerSpec is what a pre-pull Pod is made of.
type PullerSpec struct {
	Namespace string
	Workload  diff.Ref
	Owner     *metav1.OwnerReference
	Rollout   string
	Revision  string
	Pull      NodePull
	// Image the Pod runs (see PrePullOptions.Image).
	Image string
	// Deadline bounds the Pod's life (activeDeadlineSeconds), so that the
	// kubelet ends it even if refit never comes back.
	Deadline time.Duration
}

// PullerPod builds a pre-pull Pod: pinned to its node (no scheduling),
// running only a pause image with tiny requests and a securityContext the
// restricted Pod Security level admits (image volumes are allowed there
// since 1.33), mounting each image as an image volume, with the workload
// Pod's pull secrets, tolerations, node placement and runtime class. Its
// name is the same for the same rollout, revision and node, so a restarted
// refit finds it.
func PullerPod(s PullerSpec) *corev1.Pod {
	from := s.Pull.From
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pullerName(s.Workload.Name, s.Rollout, s.Revision, s.Pull.Node),
			Namespace: s.Namespace,
			Labels: map[string]string{
				PullRolloutLabel:  s.Rollout,
				PullRevisionLabel: s.Revision,
				PullWorkloadLabel: pullWorkloadValue(s.Workload),
			},
			Annotations: map[string]string{PullWorkloadAnnotation: s.Workload.Kind + "/" + s.Workload.Name},
		},
		Spec: corev1.PodSpec{
			NodeName:                      s.Pull.Node,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65535),
				RunAsGroup:     ptr.To[int64](65535),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:            "pause",
				Image:           s.Image,
				ImagePullPolicy: corev1.PullIfNotPresent,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
					Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					RunAsNonRoot:             ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
		},
	}
	if s.Owner != nil {
		pod.OwnerReferences = []metav1.OwnerReference{*s.Owner}
	}
	if s.Deadline > 0 {
		pod.Spec.ActiveDeadlineSeconds = ptr.To(int64(s.Deadline.Seconds()) + 60)
	}
	for i, img := range s.Pull.Images {
		name := fmt.Sprintf("image-%d", i)
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: name,
			VolumeSource: corev1.VolumeSource{Image: &corev1.ImageVolumeSource{Reference: img.Image, PullPolicy: img.Policy}}})
		pod.Spec.Containers[0].VolumeMounts = append(pod.Spec.Containers[0].VolumeMounts,
			corev1.VolumeMount{Name: name, MountPath: fmt.Sprintf("/images/%d", i), ReadOnly: true})
	}
	if from != nil {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, from.Spec.ImagePullSecrets...)
		pod.Spec.Tolerations = append(pod.Spec.Tolerations, from.Spec.Tolerations...)
		if len(from.Spec.NodeSelector) > 0 {
			pod.Spec.NodeSelector = map[string]string{}
			for k, v := range from.Spec.NodeSelector {
				pod.Spec.NodeSelector[k] = v
			}
		}
		if from.Spec.Affinity != nil && from.Spec.Affinity.NodeAffinity != nil {
			pod.Spec.Affinity = &corev1.Affinity{NodeAffinity: from.Spec.Affinity.NodeAffinity.DeepCopy()}
		}
		pod.Spec.RuntimeClassName = from.Spec.RuntimeClassName
	}
	return pod
}

// pullerName is "refit-pull-<workload>-<hash of rollout, revision, node>",
// at most 63 characters (a hostname).
func pullerName(workload, rollout, revision, node string) string {
	sum := sha256.Sum256([]byte(rollout + "\x00" + revision + "\x00" + node))
	suffix := hex.EncodeToString(sum[:])[:10]
	prefix := "refit-pull-" + workload
	if max := 63 - len(suffix) - 1; len(prefix) > max {
		prefix = prefix[:max]
	}
	return strings.TrimRight(prefix, "-.") + "-" + suffix
}

var labelValueRE = regexp.MustCompile(`^[a-z0-9A-Z]([-_.a-z0-9A-Z]*[a-z0-9A-Z])?$`)

// pullWorkloadValue is the workload's label value: kind.name, or the kind
// and a hash of the name where that does not fit a label value.
func pullWorkloadValue(ref diff.Ref) string {
	v := strings.ToLower(ref.Kind) + "." + ref.Name
	if len(v) <= 63 && labelValueRE.MatchString(v) {
		return v
	}
	sum := sha256.Sum256([]byte(ref.Name))
	return strings.ToLower(ref.Kind) + "." + hex.EncodeToString(sum[:])[:16]
}

// pullerImageFor is the image a node's pre-pull Pod runs: the configured
// one, else a pause image the node reports (the kubelet's sandbox image is
// there already, so nothing more is pulled), else DefaultPullerImage.
func pullerImageFor(configured string, nodeImages []string) string {
	if configured != "" {
		return configured
	}
	best := ""
	for _, name := range nodeImages {
		if strings.Contains(name, "@") {
			continue
		}
		repo := name
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		if strings.HasSuffix(repo, "/pause") && (best == "" || name > best) {
			best = name
		}
	}
	if best != "" {
		return best
	}
	return DefaultPullerImage
}
