package main

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/status"
)

// statusReporter builds the app's commit-status reporter.
func (w *appWiring) statusReporter(ctx context.Context, a config.App) (reconcile.StatusReporter, error) {
	s := a.Status
	token, err := w.secret(ctx, s.TokenSecretRef, s.TokenFile, "token")
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	// The app's Git credentials and checkout folder can reach an error
	// text, and error texts become commit-status descriptions.
	src, err := w.sourceOptions(ctx, a)
	if err != nil {
		return nil, err
	}
	rep, err := status.New(status.Options{
		Provider: status.Provider(s.Provider), RepoURL: a.Source.URL, APIURL: s.APIURL, Token: token, Username: s.Username,
		Insecure: s.Insecure, Redact: []string{src.Auth.Password, src.Auth.BearerToken},
	})
	if err != nil {
		return nil, err
	}
	return &commitStatus{rep: rep, context: "refit/" + a.Name, paths: newPathScrubber(src.CacheDir)}, nil
}

// commitStatus adapts a status.Reporter to the reconciler's interface.
type commitStatus struct {
	rep     *status.Reporter
	context string
	paths   pathScrubber
}

var _ reconcile.StatusReporter = (*commitStatus)(nil)

func (c *commitStatus) Report(ctx context.Context, commit string, state reconcile.CommitState, desc string) error {
	st := map[reconcile.CommitState]status.State{
		reconcile.CommitPending: status.Pending, reconcile.CommitSuccess: status.Success, reconcile.CommitFailure: status.Failure,
	}[state]
	return c.rep.Report(ctx, status.Status{Commit: commit, State: st, Context: c.context, Description: c.paths.scrub(desc)})
}

// pathScrubber keeps the local cache folder out of what is sent to the Git
// host: a file of the checkout is named relative to the repository root,
// as the people reading the commit status know it.
type pathScrubber struct {
	// inCheckout matches <cache>/<repository>/<commit>/, the root of a
	// checked-out tree (source.Poller's layout).
	inCheckout *regexp.Regexp
	// rest matches any other mention of the cache folder.
	rest *regexp.Regexp
}

func newPathScrubber(cacheDir string) pathScrubber {
	if cacheDir == "" {
		return pathScrubber{}
	}
	dir := regexp.QuoteMeta(filepath.Clean(cacheDir))
	return pathScrubber{
		inCheckout: regexp.MustCompile(dir + `/[^/\s"']+/[^/\s"']+/`),
		rest:       regexp.MustCompile(dir + `[^\s"':]*`),
	}
}

func (p pathScrubber) scrub(s string) string {
	if p.inCheckout == nil {
		return s
	}
	return p.rest.ReplaceAllString(p.inCheckout.ReplaceAllString(s, ""), "[cache]")
}
