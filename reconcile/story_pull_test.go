package reconcile

import (
	"testing"
	"time"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/story"
)

func TestPullLines(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    inplace.PullProgress
		want string
	}{
		{"pulling", inplace.PullProgress{Phase: inplace.PullStarted, Images: []string{"nginx:1.27"}, Nodes: 3},
			"pulling nginx:1.27 on 3 nodes before patching"},
		{"pulled", inplace.PullProgress{Phase: inplace.PullEnded, Images: []string{"nginx:1.27"}, Nodes: 3, Pulled: 3, Duration: 4123 * time.Millisecond},
			"pulled on 3 nodes in 4.1s"},
		{"pulled, one given up", inplace.PullProgress{Phase: inplace.PullEnded, Nodes: 3, Pulled: 2, GivenUp: 1, Duration: time.Second},
			"pulled on 2 nodes in 1s; 1 node pulls at the restart instead"},
		{"off", inplace.PullProgress{Phase: inplace.PullOff, Reason: "the pre-pull Pod was refused: exceeded quota"},
			"no pre-pull (the pre-pull Pod was refused: exceeded quota): the kubelet pulls at each restart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := pullEvent(story.Event{Kind: story.Pull}, &tc.p)
			if got := pullLine(e); got != tc.want {
				t.Errorf("pullLine = %q, want %q", got, tc.want)
			}
		})
	}
	failed := endLine(story.Event{Outcome: string(inplace.Failed), Reason: "pulling app:bad on node n1 failed: ErrImagePull: not found"})
	if want := "FAILED: pulling app:bad on node n1 failed: ErrImagePull: not found"; failed != want {
		t.Errorf("endLine of a failed pull = %q, want %q", failed, want)
	}
}
