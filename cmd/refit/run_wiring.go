package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/status"
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
}

func (w *appWiring) build(ctx context.Context, apps []config.App) ([]reconcile.App, http.Handler, error) {
	var out []reconcile.App
	var hooks []source.Hook
	for _, a := range apps {
		opts, err := w.sourceOptions(ctx, a)
		if err != nil {
			return nil, nil, fmt.Errorf("app %s: %w", a.Name, err)
		}
		poller, err := source.NewPoller(opts)
		if err != nil {
			return nil, nil, fmt.Errorf("app %s: %w", a.Name, err)
		}
		ro := reconcile.DefaultOptions()
		ro.App, ro.Path, ro.Namespace, ro.Prune, ro.Timeout = a.Name, a.Path, a.Namespace, *a.Prune, a.Timeout.Duration
		ro.DefaultPolicy = diff.Policy(a.Policy)
		ro.InPlace.Grace = w.grace
		app := reconcile.App{Name: a.Name, Poller: poller, Interval: a.Interval.Duration, DriftInterval: a.DriftInterval.Duration, Options: ro}
		if a.Webhook != nil {
			secret, err := w.secret(ctx, a.Webhook.SecretSecretRef, a.Webhook.SecretFile, "secret")
			if err != nil {
				return nil, nil, fmt.Errorf("app %s: webhook: %w", a.Name, err)
			}
			app.Trigger = source.NewTrigger()
			hooks = append(hooks, source.Hook{Path: "/hook/" + a.Name, Provider: source.Provider(a.Webhook.Provider),
				Secret: secret, RepoURL: a.Source.URL, Trigger: app.Trigger})
		}
		if a.Status != nil {
			if app.Status, err = w.statusReporter(ctx, a); err != nil {
				return nil, nil, fmt.Errorf("app %s: status: %w", a.Name, err)
			}
		}
		out = append(out, app)
	}
	if len(hooks) == 0 {
		return out, nil, nil
	}
	receiver, err := source.NewReceiver(source.DefaultReceiverOptions(), hooks...)
	if err != nil {
		return nil, nil, err
	}
	return out, receiver, nil
}

func (w *appWiring) sourceOptions(ctx context.Context, a config.App) (source.Options, error) {
	var opts source.Options
	var err error
	if w.flags != nil && w.flags.repo == a.Source.URL {
		opts, err = w.flags.sourceOptions() // credentials from flags and environment
	} else {
		opts = source.DefaultOptions()
		opts.URL = a.Source.URL
		if opts.Ref, err = source.ParseRef(a.Source.Ref); err == nil {
			opts.Auth, err = w.auth(ctx, a.Source)
		}
	}
	if err != nil {
		return opts, err
	}
	opts.CacheDir, err = sourcesCacheDir(w.cacheDir)
	return opts, err
}

// auth reads Git credentials from the app's Secret and files.
func (w *appWiring) auth(ctx context.Context, s config.Source) (source.Auth, error) {
	var auth source.Auth
	if s.SecretRef != nil {
		sec, err := w.client.CoreV1().Secrets(w.secretsNS).Get(ctx, s.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			return auth, fmt.Errorf("secret %s/%s: %w", w.secretsNS, s.SecretRef.Name, err)
		}
		auth.Username, auth.Password, auth.BearerToken = string(sec.Data["username"]), string(sec.Data["password"]), string(sec.Data["token"])
		auth.SSHPrivateKey, auth.KnownHosts = sec.Data["identity"], sec.Data["known_hosts"]
	}
	err := readFiles(
		textFile{s.UsernameFile, &auth.Username}, textFile{s.PasswordFile, &auth.Password}, textFile{s.TokenFile, &auth.BearerToken},
		byteFile{s.SSHKeyFile, &auth.SSHPrivateKey}, byteFile{s.KnownHostsFile, &auth.KnownHosts})
	return auth, err
}

// secret reads one value from a Secret key (default key def) or a file.
func (w *appWiring) secret(ctx context.Context, ref *config.SecretRef, file, def string) (string, error) {
	if file != "" {
		data, err := os.ReadFile(file)
		return strings.TrimSpace(string(data)), err
	}
	key := ref.Key
	if key == "" {
		key = def
	}
	sec, err := w.client.CoreV1().Secrets(w.secretsNS).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("secret %s/%s: %w", w.secretsNS, ref.Name, err)
	}
	v, ok := sec.Data[key]
	if !ok {
		return "", fmt.Errorf("secret %s/%s has no key %q", w.secretsNS, ref.Name, key)
	}
	return strings.TrimSpace(string(v)), nil
}

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
