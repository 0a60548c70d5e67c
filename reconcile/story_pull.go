package reconcile

import (
	"fmt"
	"strings"
	"time"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/story"
)

// pullEvent fills a Pull event from the engine's pre-pull report.
func pullEvent(e story.Event, p *inplace.PullProgress) story.Event {
	e.Outcome, e.Reason, e.Duration = string(p.Phase), p.Reason, p.Duration
	e.PullImages, e.Nodes, e.Pulled, e.GivenUp = p.Images, p.Nodes, p.Pulled, p.GivenUp
	return e
}

// pullLine is the CLI's line of a Pull event.
func pullLine(e story.Event) string {
	images := strings.Join(e.PullImages, ", ")
	switch inplace.PullPhase(e.Outcome) {
	case inplace.PullStarted:
		return fmt.Sprintf("pulling %s on %s before patching", images, nodesOf(e.Nodes))
	case inplace.PullEnded:
		s := fmt.Sprintf("pulled on %s in %s", nodesOf(e.Pulled), e.Duration.Round(100*time.Millisecond))
		if e.GivenUp > 0 {
			verb := "pull"
			if e.GivenUp == 1 {
				verb = "pulls"
			}
			s += fmt.Sprintf("; %s %s at the restart instead", nodesOf(e.GivenUp), verb)
		}
		return s
	default:
		return fmt.Sprintf("no pre-pull (%s): the kubelet pulls at each restart", e.Reason)
	}
}

func nodesOf(n int) string {
	if n == 1 {
		return "1 node"
	}
	return fmt.Sprintf("%d nodes", n)
}

// Keys of a Pull event's record.
const (
	keyPullImages = "pullImages"
	keyNodes      = "nodes"
	keyPulled     = "pulled"
	keyGivenUp    = "givenUp"
)

func pullKeyValues(e story.Event) []any {
	kv := []any{keyOutcome, e.Outcome, keyPullImages, e.PullImages, keyNodes, e.Nodes, keyPulled, e.Pulled}
	if e.GivenUp > 0 {
		kv = append(kv, keyGivenUp, e.GivenUp)
	}
	if e.Duration > 0 {
		kv = append(kv, keyDuration, e.Duration.String())
	}
	if e.Reason != "" {
		kv = append(kv, keyReason, e.Reason)
	}
	return kv
}
