package reconcile

import (
	"context"

	"github.com/go-logr/logr"

	"github.com/refit-gitops/refit/render"
	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/story"
)

var _ Poller = (*source.Subscription)(nil)

// outcomeUnchanged: a new commit changed nothing the app's render reads;
// it was neither rendered nor applied.
const outcomeUnchanged outcome = "unchanged"

// inputs are the paths a render consulted and the Git object each held
// in the rendered commit ("" for nothing there).
type inputs map[string]string

// lister tells what a commit holds at a path (*source.Files).
type lister interface {
	Lookup(path string) (string, error)
}

var _ lister = (*source.Files)(nil)

// inputsOf pairs what a render read with what the commit holds there. It
// returns nil, and why, when the reads may not be all the render depended
// on or a path cannot be looked up: the next commit is then rendered.
func inputsOf(reads *render.Reads, files lister) (inputs, string) {
	if reads == nil || files == nil {
		return nil, "nothing recorded"
	}
	if why := reads.Uncertain(); why != "" {
		return nil, why
	}
	paths := reads.Paths()
	in := make(inputs, len(paths))
	for _, p := range paths {
		h, err := files.Lookup(p)
		if err != nil {
			return nil, err.Error()
		}
		in[p] = h
	}
	return in, ""
}

// unchangedIn reports whether files holds the same object at every path
// of in; if not, changed names the first path that differs (or the
// lookup that failed).
func (in inputs) unchangedIn(files lister) (same bool, changed string) {
	if in == nil || files == nil {
		return false, ""
	}
	for p, want := range in {
		got, err := files.Lookup(p)
		if err != nil {
			return false, err.Error()
		}
		if got != want {
			return false, p
		}
	}
	return true, ""
}

// skipUnchanged takes a new commit that changes nothing the last
// successful render of the app read as applied, without rendering or
// applying it, and says so. It reports whether it did.
func (l *appLoop) skipUnchanged(ctx context.Context, rev source.Revision) bool {
	st := &l.st
	if st.inputs == nil || st.applied == "" || rev.Files == nil {
		return false
	}
	same, changed := st.inputs.unchangedIn(rev.Files)
	if !same {
		logr.FromContextOrDiscard(ctx).V(1).Info("inputs changed", "revision", short(rev.Commit), "path", changed)
		return false
	}
	st.applied, st.failures = rev.Commit, 0
	l.metrics.reconciled(l.id(), string(outcomeUnchanged), 0)
	l.metrics.revision(l.id(), rev.Commit)
	tell := story.Sinks{LogSink{Log: logr.FromContextOrDiscard(ctx)}, l.app.Options.Story}
	tell.Emit(story.Event{Time: l.now(), Kind: story.SyncEnded, App: l.app.Name, Source: rev.URL, Revision: rev.Commit,
		Message: firstLine(rev.Message), Author: rev.Author, Outcome: string(outcomeUnchanged)})
	l.observe(ctx, rev, outcomeUnchanged, nil)
	return true
}

// noteInputs keeps what a sync's render read, for the next commit: only
// after a success, since anything else must be tried again anyway.
func (l *appLoop) noteInputs(ctx context.Context, out outcome, reads *render.Reads, rev source.Revision) {
	l.st.inputs = nil
	if out != outcomeSuccess {
		return
	}
	in, why := inputsOf(reads, rev.Files)
	if in == nil {
		logr.FromContextOrDiscard(ctx).V(1).Info("inputs not recorded: the next commit is rendered", "reason", why)
		return
	}
	l.st.inputs = in
}
