package reconcile

import (
	"context"
	"strings"

	"github.com/refit-gitops/refit/source"
)

// Phase is where a pass over an app stands, for an Observer: the outcomes
// of refit_reconciles_total, plus "progressing" when a sync starts.
type Phase string

const (
	PhaseProgressing   Phase = "progressing"
	PhaseSuccess       Phase = Phase(outcomeSuccess)
	PhaseUnhealthy     Phase = Phase(outcomeFailure)
	PhaseRolloutFailed Phase = Phase(outcomeRolloutFailed)
	PhaseBadCommit     Phase = Phase(outcomeBadCommit)
	PhaseTransient     Phase = Phase(outcomeTransient)
	PhaseUnchanged     Phase = Phase(outcomeUnchanged)
	// PhaseGitFailed: a poll of the repository failed (unreachable host,
	// refused credentials, a ref or repository gone); the Message says
	// how. It is heard once per distinct error; the next good poll is
	// heard as the last pass before the failure again.
	PhaseGitFailed Phase = "git-failed"
)

// Pass is what an Observer learns of a pass.
type Pass struct {
	Revision source.Revision
	Phase    Phase
	// Message says what happened (the error, for a failure).
	Message string
	// Err is the poll's error (PhaseGitFailed): its kind, for errors.Is
	// (source.ErrAuth, source.ErrHostKey…), tells a refusal of the
	// credentials from an unreachable host. Show Message, not Err: only
	// Message is scrubbed for display.
	Err error
	// Rollouts are the in-place rollouts under way (PhaseProgressing).
	Rollouts []RolloutProgress
	// Progress: a report of the rollouts' progress within a sync, not the
	// start or end of a pass (a status, not an event, is worth it).
	Progress bool
}

// Observer hears how each pass over an app goes (the App object's status
// and events). It must not block for long: the loop waits for it.
type Observer interface {
	Observe(ctx context.Context, p Pass)
}

// observe tells the app's Observer, if any, about a pass.
func (l *appLoop) observe(ctx context.Context, rev source.Revision, out outcome, err error) {
	if l.app.Observer == nil {
		return
	}
	p := Pass{Revision: rev, Phase: Phase(out)}
	if err != nil {
		p.Message = err.Error()
	}
	switch out {
	case outcomeSuperseded, outcomePollError:
		return // the next pass says more
	case outcomeSuccess:
		p.Message = "applied and healthy"
	case outcomeUnchanged:
		p.Message = "the commit changed nothing this app reads"
	}
	p.Message = strings.TrimSpace(p.Message)
	if out != outcome(PhaseProgressing) {
		l.st.last = &p
	}
	l.app.Observer.Observe(ctx, p)
}
