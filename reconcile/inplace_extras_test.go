package reconcile

import (
	"testing"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/story"
)

// A rollout's first line says what goes in place besides images; a
// rollout of resources or metadata alone is not "continuing".
func TestStartLine(t *testing.T) {
	resize := diff.Change{Resources: []diff.ResourceChange{{Container: "app", Resource: "requests.cpu", From: "100m", To: "200m"}},
		Metadata: []diff.MetadataChange{{Kind: "label", Key: "tier", To: "front"}}}
	img := []story.Image{{Container: "app", From: "app:1", To: "app:2"}}
	for _, tc := range []struct {
		name string
		e    story.Event
		want string
	}{
		{"images", story.Event{Images: img}, "app app:1 → app:2"},
		{"resources and metadata", story.Event{Reason: extrasOf(resize)}, "app requests.cpu 100m → 200m, label tier=front added"},
		{"both", story.Event{Images: img, Reason: extrasOf(resize)}, "app app:1 → app:2, app requests.cpu 100m → 200m, label tier=front added"},
		{"nothing new", story.Event{}, "continuing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := startLine(tc.e); got != tc.want {
				t.Errorf("startLine = %q, want %q", got, tc.want)
			}
		})
	}
}
