package reconcile

import (
	"context"
	"strings"

	"github.com/refit-gitops/refit/source"
)

// pollFailure is the message a failed poll shows: its error, without
// credentials. The source package scrubs its own errors; this is the last
// guard before a message reaches the App's status and events, which anyone
// who can read the App sees.
func pollFailure(err error) string {
	return source.ScrubURLs(strings.TrimSpace(err.Error()))
}

// showPollError tells the Observer that the poll failed with err, shown
// as msg. The revision is the last pass's: what the App last worked on,
// which the failure does not change.
func (l *appLoop) showPollError(ctx context.Context, msg string, err error) {
	l.st.pollErr = msg
	if l.app.Observer == nil {
		return
	}
	p := Pass{Phase: PhaseGitFailed, Message: msg, Err: err}
	if l.st.last != nil {
		p.Revision = l.st.last.Revision
	}
	l.app.Observer.Observe(ctx, p)
}

// reshow tells the Observer the last pass again, once Git is reachable
// again and no new commit or drift pass says where the App stands. A loop
// that never ended a pass has nothing to show: its first good poll finds
// a new commit, whose sync reports itself.
func (l *appLoop) reshow(ctx context.Context) {
	if l.app.Observer == nil || l.st.last == nil {
		return
	}
	l.app.Observer.Observe(ctx, *l.st.last)
}
