package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/refit-gitops/refit/config"
)

func TestSecretsReader(t *testing.T) {
	for _, tc := range []struct {
		name           string
		appNS, sa, def string
		want           serviceAccount
	}{
		{name: "App object with serviceAccountName", appNS: "team-a", sa: "deployer", want: serviceAccount{"team-a", "deployer"}},
		{name: "App object, default ServiceAccount", appNS: "team-a", def: "refit-deployer", want: serviceAccount{"team-a", "refit-deployer"}},
		{name: "serviceAccountName wins over the default", appNS: "team-a", sa: "deployer", def: "refit-deployer", want: serviceAccount{"team-a", "deployer"}},
		{name: "App object without ServiceAccount: refit's own", appNS: "team-a"},
		{name: "Config entry: refit's own, Secrets in refit's namespace", sa: "deployer", def: "refit-deployer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := config.App{Name: "shop", AppNamespace: tc.appNS, Namespace: "shop", ServiceAccountName: tc.sa}
			got, ok := secretsReader(a, tc.def)
			if got != tc.want || ok != (tc.want != serviceAccount{}) {
				t.Errorf("secretsReader = %v, %v; want %v", got, ok, tc.want)
			}
		})
	}
}

func TestSecretError(t *testing.T) {
	forbidden := apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "git", nil)
	notFound := apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, "git")
	deployer := serviceAccount{"team-a", "deployer"}
	for _, tc := range []struct {
		name      string
		as        serviceAccount
		err       error
		want, not []string
	}{
		{name: "forbidden to the ServiceAccount: names it and the fix", as: deployer, err: forbidden,
			want: []string{"secret team-a/git: ServiceAccount team-a/deployer may not get it",
				"kubectl -n team-a create role read-git --verb=get --resource=secrets --resource-name=git",
				"kubectl -n team-a create rolebinding read-git-deployer --role=read-git --serviceaccount=team-a:deployer", "forbidden"}},
		{name: "missing: no RBAC advice", as: deployer, err: notFound, want: []string{"secret team-a/git: ", "not found"}, not: []string{"Role"}},
		{name: "forbidden to refit itself: no ServiceAccount to name", err: forbidden, want: []string{"secret team-a/git: "}, not: []string{"ServiceAccount"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := secretError("team-a", "git", tc.as, tc.err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q: want %q", err, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(err.Error(), n) {
					t.Errorf("error %q: want no %q", err, n)
				}
			}
			if !apierrors.IsForbidden(err) && apierrors.IsForbidden(tc.err) {
				t.Errorf("error %q: the API error is not wrapped", err)
			}
		})
	}
}

// TestBuildReadsSecretsAsServiceAccount: an App object's Secrets are read
// through the client of its ServiceAccount, not refit's, and a refusal
// fails the build naming the Secret and the ServiceAccount.
func TestBuildReadsSecretsAsServiceAccount(t *testing.T) {
	git := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: "team-a"}, Data: map[string][]byte{"password": []byte("p")}}
	hook := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: "team-a"}, Data: map[string][]byte{"secret": []byte("a-webhook-secret-of-32-bytes....")}}
	refusing := fake.NewClientset(git.DeepCopy(), hook.DeepCopy())
	refusing.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "git", nil)
	})
	app := func(name, sa string) config.App {
		a := config.App{Name: name, AppNamespace: "team-a", Namespace: "team-a", ServiceAccountName: sa,
			Source:  config.Source{URL: "https://example.com/" + name + ".git", SecretRef: &config.SecretRef{Name: "git"}},
			Webhook: &config.Webhook{Provider: "github", SecretSecretRef: &config.SecretRef{Name: "hook"}}}
		a.Defaults()
		return a
	}
	for _, tc := range []struct {
		name      string
		app       config.App
		noReaders bool
		wantErr   string
	}{
		{name: "the ServiceAccount may read them", app: app("a", "deployer")},
		{name: "the ServiceAccount may not", app: app("b", "stranger"),
			wantErr: "secret team-a/git: ServiceAccount team-a/stranger may not get it"},
		{name: "no clients for ServiceAccounts: never refit's own", app: app("c", "deployer"), noReaders: true,
			wantErr: "secret team-a/git: no client to read it as team-a/deployer"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			readers := newSecretClients(nil)
			readers.byUser = map[string]kubernetes.Interface{
				serviceAccountUser("team-a", "deployer"): fake.NewClientset(git.DeepCopy(), hook.DeepCopy()),
				serviceAccountUser("team-a", "stranger"): refusing,
			}
			// refit's own client holds the Secrets too: a read through it
			// would pass where the ServiceAccount's must fail.
			w := &appWiring{client: fake.NewClientset(git.DeepCopy(), hook.DeepCopy()), secretsNS: "refit-system", cacheDir: t.TempDir(), secretReaders: readers}
			if tc.noReaders {
				w.secretReaders = nil
			}
			_, err := w.build(t.Context(), []config.App{tc.app})
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("build: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("build error = %v; want %q", err, tc.wantErr)
			}
		})
	}
}
