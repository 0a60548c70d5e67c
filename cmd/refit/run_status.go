package main

import (
	"context"
	"fmt"

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
	rep, err := status.New(status.Options{Provider: status.Provider(s.Provider), RepoURL: a.Source.URL, APIURL: s.APIURL, Token: token, Username: s.Username})
	if err != nil {
		return nil, err
	}
	return &commitStatus{rep: rep, context: "refit/" + a.Name}, nil
}

// commitStatus adapts a status.Reporter to the reconciler's interface.
type commitStatus struct {
	rep     *status.Reporter
	context string
}

var _ reconcile.StatusReporter = (*commitStatus)(nil)

func (c *commitStatus) Report(ctx context.Context, commit string, state reconcile.CommitState, desc string) error {
	st := map[reconcile.CommitState]status.State{
		reconcile.CommitPending: status.Pending, reconcile.CommitSuccess: status.Success, reconcile.CommitFailure: status.Failure,
	}[state]
	return c.rep.Report(ctx, status.Status{Commit: commit, State: st, Context: c.context, Description: desc})
}
