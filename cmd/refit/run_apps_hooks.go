package main

import (
	"context"
	"net/http"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/source"
)

// hookPath is where an app's webhook is served: /hook/<namespace>/<name>
// for an App object (its name is unique in its namespace only), and
// /hook/<name> for an app of a config file, as before App objects.
func hookPath(a config.App, object bool) string {
	if object {
		return "/hook/" + a.AppNamespace + "/" + a.Name
	}
	return "/hook/" + a.Name
}

// hookSecret reads the app's webhook secret again (source.Hook.Reload),
// through the same reader as at start: a rotated Secret takes effect at
// the first delivery signed with it.
func (w *appWiring) hookSecret(a config.App) func(ctx context.Context) (string, error) {
	ref, file := a.Webhook.SecretSecretRef, a.Webhook.SecretFile
	return func(ctx context.Context) (string, error) { return w.secret(ctx, ref, file, "secret") }
}

// serveHooks makes the Receiver of the running Apps' webhooks, empty until
// Apps start; nil when refit serves no HTTP. Sharded, the hooks of the
// Apps other replicas run are answered too (shardHooks).
func (c *appController) serveHooks(listen bool) (http.Handler, error) {
	if !listen {
		return nil, nil
	}
	recv, err := source.NewReceiver(source.DefaultReceiverOptions())
	if err != nil {
		return nil, err
	}
	c.hooks = recv
	if c.member == nil {
		return recv, nil
	}
	if c.shardHooks, err = newShardHooks(c, recv); err != nil {
		return nil, err
	}
	return c.shardHooks, nil
}

// setHooks serves the hooks of the App key (none: it has none, or it
// stopped).
func (c *appController) setHooks(key string, hooks []source.Hook) error {
	if c.hooks == nil {
		return nil
	}
	return c.hooks.Set(key, hooks...)
}
