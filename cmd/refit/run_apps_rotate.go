package main

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/source"
)

// Rotated Git credentials of an App object. Its Secrets are read as the
// App's ServiceAccount, which needs only get on them (run_secrets.go): a
// watch or list would ask every team for more rights than refit needs. So
// refit reads them again when the Git host refuses them, not when they
// change: at once, then on a backoff, while the refusal lasts; if what it
// reads differs from what the App's loop runs with, the loop restarts (as
// on a spec change, with no new generation). Apps of a --config file or
// --repo flags read their Secrets at start only.
const (
	// credsRecheckFirst is the wait before the second re-read; each next
	// one waits twice as long, up to credsRecheckMax.
	credsRecheckFirst = 5 * time.Second
	credsRecheckMax   = 5 * time.Minute
)

// recheckDelay is the wait before re-read n (from 0) of a refusal:
// 0, 5 s, 10 s, 20 s … up to 5 min.
func recheckDelay(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return min(credsRecheckFirst<<min(n-1, 16), credsRecheckMax)
}

// credentialsRefused says whether a failed poll's error is the Git host
// refusing the credentials, or an SSH host key not matching known_hosts:
// the failures new credentials can mend.
func credentialsRefused(err error) bool {
	return errors.Is(err, source.ErrAuth) || errors.Is(err, source.ErrHostKey)
}

// credentialsChanged decides whether a re-read restarts the loop: only
// when it read something, and something else than the loop runs with.
func credentialsChanged(running, read string) bool {
	return read != "" && read != running
}

// credentialsReader re-reads a's credentials the way its loop's were read
// at start (its Secrets as its ServiceAccount, and its files), as a digest.
func credentialsReader(aw *appWiring, a config.App) func(ctx context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		opts, err := aw.sourceOptions(ctx, a)
		if err != nil {
			return "", err // names the Secret or file, never what it holds
		}
		return opts.CredentialsDigest(), nil
	}
}

// credsRecheck re-reads one running App's credentials while the Git host
// refuses them. It lives as long as the App's loop: loopCtx is the loop's,
// and stop is called once the loop has ended.
type credsRecheck struct {
	loopCtx context.Context
	app     string // namespace/name
	running string // CredentialsDigest of the loop's poller
	read    func(ctx context.Context) (string, error)
	// restart asks for the App's loop to be restarted (it must not wait
	// for the loop: the loop waits for the recheck).
	restart func()
	after   func(d time.Duration) <-chan time.Time

	mu     sync.Mutex
	cancel context.CancelFunc // nil: no recheck runs
	done   chan struct{}
}

// observe starts the recheck on a refusal and stops it on any other pass:
// the loop tells a Git failure once per distinct error, so the recheck
// keeps its own schedule until the loop says something else (a good poll
// or another failure).
func (w *credsRecheck) observe(p reconcile.Pass) {
	refused := p.Phase == reconcile.PhaseGitFailed && credentialsRefused(p.Err)
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case refused && w.cancel == nil:
		ctx, cancel := context.WithCancel(w.loopCtx)
		w.cancel, w.done = cancel, make(chan struct{})
		go w.run(ctx, w.done)
	case !refused && w.cancel != nil:
		w.stopLocked()
	}
}

// stop ends the recheck, if one runs, and waits for it.
func (w *credsRecheck) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cancel != nil {
		w.stopLocked()
	}
}

func (w *credsRecheck) stopLocked() {
	w.cancel()
	<-w.done
	w.cancel, w.done = nil, nil
}

func (w *credsRecheck) run(ctx context.Context, done chan struct{}) {
	defer close(done)
	log := logr.FromContextOrDiscard(ctx).WithValues("app", w.app)
	for n := 0; ; n++ {
		if d := recheckDelay(n); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-w.after(d):
			}
		}
		read, err := w.read(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			log.Error(err, "git credentials refused and not read again")
		case credentialsChanged(w.running, read):
			log.Info("git credentials refused and changed since the app started: restarting it")
			w.restart()
			return
		default:
			log.V(1).Info("git credentials refused and unchanged", "next", recheckDelay(n+1).String())
		}
	}
}
