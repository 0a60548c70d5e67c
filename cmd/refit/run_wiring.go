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
	// secretsAs is the ServiceAccount the app's Secrets are read as (zero:
	// refit's own identity), with a client of secretReaders (forApp).
	secretsAs     serviceAccount
	secretReaders *secretClients
	// hub polls each repository once for all the apps that track it
	// (built by build when nil).
	hub *source.Hub
	// objects: the apps are App objects (hookPath).
	objects bool
}

// wired is what build makes of the config's apps.
type wired struct {
	apps  []reconcile.App
	hooks http.Handler
	// hookList are the hooks hooks serves (the App controller sets them
	// on its own Receiver).
	hookList []source.Hook
	// own maps the apps that act as an identity of their own to its
	// Reconciler.
	own map[string]*reconcile.Reconciler
	// sources polls the apps' repositories; it runs while the apps do.
	sources *source.Hub
	// creds maps each app to the source.Options.CredentialsDigest of what its poller
	// authenticates and verifies with (run_apps_rotate.go).
	creds map[string]string
}

// appOptions are the reconcile options of a.
func appOptions(a config.App, grace time.Duration) reconcile.Options {
	ro := reconcile.DefaultOptions()
	ro.App, ro.Path, ro.Namespace, ro.Timeout = a.Name, a.Path, a.Namespace, a.Timeout.Duration
	ro.Prune = a.Prune == nil || *a.Prune
	ro.DefaultPolicy, ro.AllowEmpty = diff.Policy(a.Policy), a.AllowEmpty
	ro.InPlace.Grace = grace
	return ro
}

func (w *appWiring) build(ctx context.Context, apps []config.App) (*wired, error) {
	if w.hub == nil {
		dir, err := sourcesCacheDir(w.cacheDir)
		if err != nil {
			return nil, err
		}
		w.hub = source.NewHub(dir)
	}
	out := &wired{own: map[string]*reconcile.Reconciler{}, sources: w.hub, creds: map[string]string{}}
	var hooks []source.Hook
	for _, a := range apps {
		// An App object's Secrets are in its namespace, read as its
		// ServiceAccount; a Config entry's in refit's.
		aw := w.forApp(a)
		opts, err := aw.sourceOptions(ctx, a)
		if err != nil {
			return nil, fmt.Errorf("app %s: %w", a.Name, err)
		}
		out.creds[a.Name] = opts.CredentialsDigest()
		// Apps on one repository and ref share its polls, fetches and trees.
		sub, err := w.hub.Subscribe(opts, a.Interval.Duration)
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
		ro := appOptions(a, w.grace)
		ro.AppNamespace = aw.secretsNS // the App's namespace, or refit's
		app := reconcile.App{Name: a.Name, Poller: sub, Trigger: sub.Changed(), Interval: a.Interval.Duration, DriftInterval: a.DriftInterval.Duration, Options: ro}
		if a.Webhook != nil {
			secret, err := aw.secret(ctx, a.Webhook.SecretSecretRef, a.Webhook.SecretFile, "secret")
			if err != nil {
				return nil, fmt.Errorf("app %s: webhook: %w", a.Name, err)
			}
			// The hook wakes the shared poller, which tells every app on the
			// repository if the commit moved.
			hooks = append(hooks, source.Hook{Path: hookPath(a, w.objects), Provider: source.Provider(a.Webhook.Provider),
				Secret: secret, RepoURL: a.Source.URL, Trigger: sub.Wake(), Reload: aw.hookSecret(a)})
		}
		if a.Status != nil {
			if app.Status, err = aw.statusReporter(ctx, a); err != nil {
				return nil, fmt.Errorf("app %s: status: %w", a.Name, err)
			}
		}
		out.apps = append(out.apps, app)
	}
	out.hookList = hooks
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
