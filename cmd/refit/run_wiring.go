package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/source"
)

// appWiring turns config apps into running parts: pollers, webhook
// triggers, commit-status reporters, with secrets read from refit's own
// namespace or from files.
type appWiring struct {
	client    kubernetes.Interface
	secretsNS string
	cacheDir  string
	grace     time.Duration
	// flags carry the credentials of a single app given on the command line.
	flags *sourceFlags
	// ids build the Reconcilers of apps with an identity of their own.
	ids *identities
}

// wired is what build makes of the config's apps.
type wired struct {
	apps  []reconcile.App
	hooks http.Handler
	// own maps the apps that act as an identity of their own to its
	// Reconciler.
	own map[string]*reconcile.Reconciler
}

func (w *appWiring) build(ctx context.Context, apps []config.App) (*wired, error) {
	out := &wired{own: map[string]*reconcile.Reconciler{}}
	var hooks []source.Hook
	for _, a := range apps {
		opts, err := w.sourceOptions(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("app %s: %w", a.Name, err)
		}
		poller, err := source.NewPoller(opts)
		if err != nil {
			return nil, fmt.Errorf("app %s: %w", a.Name, err)
		}
		if w.ids != nil {
			rec, err := w.ids.reconciler(ctx, a)
			if err != nil {
				return nil, fmt.Errorf("app %s: %w", a.Name, err)
			}
			if rec != nil {
				out.own[a.Name] = rec
			}
		}
		ro := reconcile.DefaultOptions()
		ro.App, ro.Path, ro.Namespace, ro.Prune, ro.Timeout = a.Name, a.Path, a.Namespace, *a.Prune, a.Timeout.Duration
		ro.DefaultPolicy, ro.AllowEmpty = diff.Policy(a.Policy), a.AllowEmpty
		ro.InPlace.Grace = w.grace
		app := reconcile.App{Name: a.Name, Poller: poller, Interval: a.Interval.Duration, DriftInterval: a.DriftInterval.Duration, Options: ro}
		if a.Webhook != nil {
			secret, err := w.secret(ctx, a.Webhook.SecretSecretRef, a.Webhook.SecretFile, "secret")
			if err != nil {
				return nil, fmt.Errorf("app %s: webhook: %w", a.Name, err)
			}
			app.Trigger = source.NewTrigger()
			hooks = append(hooks, source.Hook{Path: "/hook/" + a.Name, Provider: source.Provider(a.Webhook.Provider),
				Secret: secret, RepoURL: a.Source.URL, Trigger: app.Trigger})
		}
		if a.Status != nil {
			if app.Status, err = w.statusReporter(ctx, a); err != nil {
				return nil, fmt.Errorf("app %s: status: %w", a.Name, err)
			}
		}
		out.apps = append(out.apps, app)
	}
	if len(hooks) == 0 {
		return out, nil
	}
	receiver, err := source.NewReceiver(source.DefaultReceiverOptions(), hooks...)
	if err != nil {
		return nil, err
	}
	out.hooks = receiver
	return out, nil
}
