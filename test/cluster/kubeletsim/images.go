package kubeletsim

import (
	"crypto/sha256"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Annotations and the condition shared with the kwok Stages (stages.yaml).
const (
	// PullDelayAnnotation on a Node overrides the cluster's pull time.
	PullDelayAnnotation = "kwok.refit.dev/pull-delay"
	// PullingCondition is True on a Pod while its node pulls an image it
	// waits for; the Stages do not start or restart its containers until it
	// is gone. refit never reads or writes it.
	PullingCondition corev1.PodConditionType = "kwok.refit.dev/ImagePulling"
	// reportPrefixAnnotation makes the Stages report images with a prefix.
	reportPrefixAnnotation = "kwok.refit.dev/report-image-prefix"
	// imageSize is what status.images reports for every pulled image.
	imageSize = 10 << 20
)

// PullDelay is how long node takes to pull an image: its annotation, else
// the cluster's default.
func PullDelay(node *corev1.Node, def time.Duration) (time.Duration, error) {
	v, ok := node.Annotations[PullDelayAnnotation]
	if !ok {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return def, fmt.Errorf("node %s: annotation %s=%q is not a duration >= 0", node.Name, PullDelayAnnotation, v)
	}
	return d, nil
}

// ImagesNeeded lists the images pod waits for now, as the kubelet would pull
// them: every image of a Pod whose containers have not started (containers,
// init containers, image volumes); for a started Pod, the spec image of each
// container that does not run it (an in-place change). Images matching bad
// are left out: their pull fails, which the Stages model.
func ImagesNeeded(pod *corev1.Pod, bad *regexp.Regexp) []string {
	var out []string
	add := func(image string) {
		if image != "" && !bad.MatchString(image) && !slices.Contains(out, image) {
			out = append(out, image)
		}
	}
	if pod.Status.Phase == corev1.PodPending || pod.Status.Phase == "" {
		for _, c := range pod.Spec.InitContainers {
			add(c.Image)
		}
		for _, c := range pod.Spec.Containers {
			add(c.Image)
		}
		for _, v := range pod.Spec.Volumes {
			if v.Image != nil {
				add(v.Image.Reference)
			}
		}
		return out
	}
	if pod.Status.Phase != corev1.PodRunning {
		return nil
	}
	prefix := pod.Annotations[reportPrefixAnnotation]
	for _, c := range pod.Spec.Containers {
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == c.Name && (s.State.Running == nil || s.Image != prefix+c.Image) {
				add(c.Image)
			}
		}
	}
	return out
}

// ImageNames is the set of names node reports in status.images.
func ImageNames(node *corev1.Node) map[string]bool {
	names := map[string]bool{}
	for _, img := range node.Status.Images {
		for _, n := range img.Names {
			names[n] = true
		}
	}
	return names
}

// ContainerImage is what a node lists for a pulled image: the name as the
// Pod spec wrote it and the digest form the Stages report as imageID.
func ContainerImage(image string) corev1.ContainerImage {
	return corev1.ContainerImage{
		Names:     []string{image, fmt.Sprintf("kwok.local/image@sha256:%x", sha256.Sum256([]byte(image)))},
		SizeBytes: imageSize,
	}
}

// ImagePlan is what one pass over a node decides about image pulls.
type ImagePlan struct {
	// Pulled are the images whose pull is done, to add to status.images.
	Pulled []string
	// Pulls are the pulls still under way: image -> when it is done.
	Pulls map[string]time.Time
	// Mark are Pods to mark pulling, Unmark Pods whose wait is over.
	Mark, Unmark []*corev1.Pod
	// Next is when a pull ends and the node wants another pass (zero: none).
	Next time.Time
}

// PlanImages decides one pass of image pulls on a node: pulls are the pulls
// under way from earlier passes. A pull starts when a Pod first waits for an
// image the node does not list, and lasts delay; every Pod that waits for it
// waits for that one pull. A Pod already marked pulling (by an earlier run of
// this process) dates its pull from the mark, so a restart does not restart
// the clock.
func PlanImages(node *corev1.Node, pods []*corev1.Pod, pulls map[string]time.Time, now time.Time, delay time.Duration, bad *regexp.Regexp) ImagePlan {
	have := ImageNames(node)
	plan := ImagePlan{Pulls: map[string]time.Time{}}
	for image, done := range pulls {
		if !have[image] {
			plan.Pulls[image] = done
		}
	}
	waiting := make([][]string, len(pods))
	for i, pod := range pods {
		for _, image := range ImagesNeeded(pod, bad) {
			if have[image] {
				continue
			}
			waiting[i] = append(waiting[i], image)
			if _, ok := plan.Pulls[image]; !ok {
				start := now
				if c := podCondition(pod, PullingCondition); c != nil && c.LastTransitionTime.Time.Before(now) {
					start = c.LastTransitionTime.Time
				}
				plan.Pulls[image] = start.Add(delay)
			}
		}
	}
	for image, done := range plan.Pulls {
		if !done.After(now) {
			plan.Pulled = append(plan.Pulled, image)
			delete(plan.Pulls, image)
		} else if plan.Next.IsZero() || done.Before(plan.Next) {
			plan.Next = done
		}
	}
	slices.Sort(plan.Pulled)
	for i, pod := range pods {
		pulling := slices.ContainsFunc(waiting[i], func(image string) bool { _, ok := plan.Pulls[image]; return ok })
		marked := podCondition(pod, PullingCondition) != nil
		switch {
		case pulling && !marked:
			plan.Mark = append(plan.Mark, pod)
		case !pulling && marked:
			plan.Unmark = append(plan.Unmark, pod)
		}
	}
	return plan
}

// WithImages is node's status.images with images added, newest last.
func WithImages(node *corev1.Node, images []string) []corev1.ContainerImage {
	out := slices.Clone(node.Status.Images)
	have := ImageNames(node)
	for _, image := range images {
		if !have[image] {
			out = append(out, ContainerImage(image))
		}
	}
	return out
}

// pullingMessage says what a marked Pod waits for.
func pullingMessage(pod *corev1.Pod, bad *regexp.Regexp) string {
	return "pulling " + strings.Join(ImagesNeeded(pod, bad), ", ")
}

func podCondition(pod *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range pod.Status.Conditions {
		if pod.Status.Conditions[i].Type == t {
			return &pod.Status.Conditions[i]
		}
	}
	return nil
}
