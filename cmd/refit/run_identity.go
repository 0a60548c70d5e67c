package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
)

// identities builds the Reconcilers of apps that act as an identity of
// their own: a ServiceAccount in the app's namespace (serviceAccountName,
// or --default-service-account), or refit run's own --as. Each makes every
// request of its apps as that identity, records their Events as it, and
// keeps their inventories in their namespace, where it may write them.
type identities struct {
	base *reconcile.Reconciler
	// cfg is refit's own connection (with --as, already an identity).
	cfg       *rest.Config
	defaultSA string

	built map[identityKey]*reconcile.Reconciler
	stops []func()
}

type identityKey struct{ user, namespace string }

// serviceAccountOf is the ServiceAccount app acts as ("": refit's own
// identity).
func serviceAccountOf(a config.App, defaultSA string) string {
	if a.ServiceAccountName != "" {
		return a.ServiceAccountName
	}
	return defaultSA
}

// serviceAccountUser is the user name the API server gives a
// ServiceAccount's requests.
func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

func checkServiceAccountName(name string) error {
	if name == "" {
		return nil
	}
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("service account %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// reconciler is the Reconciler app runs with, or nil for refit's own.
// Its Event recorder runs until ctx ends (or stop).
func (ids *identities) reconciler(ctx context.Context, a config.App) (*reconcile.Reconciler, error) {
	sa := serviceAccountOf(a, ids.defaultSA)
	if err := checkServiceAccountName(sa); err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(ids.cfg)
	if sa != "" {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: serviceAccountUser(a.ServiceAccountNamespace(), sa)}
	}
	if cfg.Impersonate.UserName == "" {
		return nil, nil
	}
	logr.FromContextOrDiscard(ctx).Info("app acts as its own identity", "app", a.Name, "identity", cfg.Impersonate.UserName)
	key := identityKey{user: cfg.Impersonate.UserName, namespace: a.Namespace}
	if rec := ids.built[key]; rec != nil {
		return rec, nil
	}
	events, stop, err := eventRecorder(ctx, cfg)
	if err != nil {
		return nil, err
	}
	ids.stops = append(ids.stops, stop)
	rec, err := ids.base.For(cfg, reconcile.WithEvents(events), reconcile.WithInventoryNamespace(a.Namespace))
	if err != nil {
		return nil, fmt.Errorf("as %s: %w", cfg.Impersonate.UserName, err)
	}
	if ids.built == nil {
		ids.built = map[identityKey]*reconcile.Reconciler{}
	}
	ids.built[key] = rec
	return rec, nil
}

// stop flushes and stops the identities' event recorders.
func (ids *identities) stop() {
	for _, s := range ids.stops {
		s()
	}
}

// eventRecorder records Events through cfg: an app's Events are written
// as the app's identity, so refit's own needs no events rights in the
// apps' namespaces.
func eventRecorder(ctx context.Context, cfg *rest.Config) (record.EventRecorder, func(), error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	return broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "refit"}), broadcaster.Shutdown, nil
}
