package reconcile

import (
	"strings"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/story"
)

// extrasOf is what an in-place change does besides images (resources,
// template metadata), for the line a rollout starts with; "" for images
// alone.
func extrasOf(c diff.Change) string { return strings.Join(diff.InPlaceParts(c), ", ") }

// startLine is what a RolloutStarted event tells: its images, and its
// other in-place changes (in Reason).
func startLine(e story.Event) string {
	switch {
	case len(e.Images) > 0 && e.Reason != "":
		return imagesLine(e.Images) + ", " + e.Reason
	case len(e.Images) == 0 && e.Reason != "":
		return e.Reason
	}
	return imagesLine(e.Images)
}
