package reconcile

import (
	"context"
	"regexp"
	"strings"
)

// urlUserinfo matches the userinfo of a URL inside error text. The source
// package scrubs its own errors; this is the last guard before a message
// reaches the App's status and events, which anyone who can read the App
// sees.
var urlUserinfo = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@`)

// pollFailure is the message a failed poll shows: its error, without
// credentials.
func pollFailure(err error) string {
	return urlUserinfo.ReplaceAllString(strings.TrimSpace(err.Error()), "$1")
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
