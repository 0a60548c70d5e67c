package main

import (
	"context"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/refit-gitops/refit/config"
)

// serviceAccount names a ServiceAccount.
type serviceAccount struct{ namespace, name string }

func (sa serviceAccount) user() string { return serviceAccountUser(sa.namespace, sa.name) }

func (sa serviceAccount) String() string { return sa.namespace + "/" + sa.name }

// secretsReader is the ServiceAccount an app's Secrets are read as (ok
// false: refit's own identity). An App object's Secrets and its
// ServiceAccount share its namespace: reading them as the identity the App
// applies with lets a team decide what refit may read, and refit needs no
// Secret rights of its own there. A Config entry's Secrets are in refit's
// namespace, filled by its admin, and its ServiceAccount in the target
// namespace: refit reads them itself, as does an app with no
// ServiceAccount.
func secretsReader(a config.App, defaultSA string) (serviceAccount, bool) {
	sa := serviceAccountOf(a, defaultSA)
	if sa == "" || a.AppNamespace == "" {
		return serviceAccount{}, false
	}
	return serviceAccount{namespace: a.AppNamespace, name: sa}, true
}

// secretClients are the clients that read Secrets as ServiceAccounts, one
// per ServiceAccount, kept while refit runs (a client holds no Secret: each
// read is a GET).
type secretClients struct {
	cfg *rest.Config

	mu     sync.Mutex
	byUser map[string]kubernetes.Interface
}

func newSecretClients(cfg *rest.Config) *secretClients {
	return &secretClients{cfg: cfg, byUser: map[string]kubernetes.Interface{}}
}

func (s *secretClients) client(sa serviceAccount) (kubernetes.Interface, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.byUser[sa.user()]; c != nil {
		return c, nil
	}
	cfg := rest.CopyConfig(s.cfg)
	// Impersonation replaces refit's own --as, if any: the API server
	// authorises the read against the ServiceAccount's RBAC alone (and
	// refit's right to impersonate it).
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa.user()}
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("as %s: %w", sa.user(), err)
	}
	s.byUser[sa.user()] = c
	return c, nil
}

// forApp is the wiring of one app: where its Secrets are and whom refit
// reads them as.
func (w *appWiring) forApp(a config.App) *appWiring {
	aw := *w
	aw.secretsNS = a.SecretNamespace(w.secretsNS)
	defaultSA := ""
	if w.ids != nil {
		defaultSA = w.ids.defaultSA
	}
	aw.secretsAs, _ = secretsReader(a, defaultSA)
	return &aw
}

// getSecret reads the Secret name of the app, as its ServiceAccount when
// it has one. Always a GET, never a cache: a rotated Secret is read the
// next time the app is wired (its loop restarts).
func (w *appWiring) getSecret(ctx context.Context, name string) (*corev1.Secret, error) {
	client := w.client
	if w.secretsAs != (serviceAccount{}) {
		if w.secretReaders == nil {
			// Reading as refit itself would skip the team's RBAC.
			return nil, fmt.Errorf("secret %s/%s: no client to read it as %s", w.secretsNS, name, w.secretsAs)
		}
		var err error
		if client, err = w.secretReaders.client(w.secretsAs); err != nil {
			return nil, fmt.Errorf("secret %s/%s: %w", w.secretsNS, name, err)
		}
	}
	sec, err := client.CoreV1().Secrets(w.secretsNS).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, secretError(w.secretsNS, name, w.secretsAs, err)
	}
	return sec, nil
}

// secretError says which Secret could not be read and, when the
// ServiceAccount it is read as may not, how to let it.
func secretError(namespace, name string, as serviceAccount, err error) error {
	if as == (serviceAccount{}) || !apierrors.IsForbidden(err) {
		return fmt.Errorf("secret %s/%s: %w", namespace, name, err)
	}
	return fmt.Errorf("secret %s/%s: ServiceAccount %s may not get it: grant it with a Role "+
		"(kubectl -n %s create role read-%s --verb=get --resource=secrets --resource-name=%s; "+
		"kubectl -n %s create rolebinding read-%s-%s --role=read-%s --serviceaccount=%s:%s): %w",
		namespace, name, as, namespace, name, name, namespace, name, as.name, name, as.namespace, as.name, err)
}
