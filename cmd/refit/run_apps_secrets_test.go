package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/refit-gitops/refit/config"
)

// TestBuildSecretsNamespace: an App object's (or App document's) Secrets are
// read in its own namespace, a Config entry's in refit's; one app's
// namespace does not leak to the next.
func TestBuildSecretsNamespace(t *testing.T) {
	secret := func(ns string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "git", Namespace: ns}, Data: map[string][]byte{"token": []byte("t-" + ns)}}
	}
	client := fake.NewClientset(secret("refit-system"), secret("team-a"))
	app := func(name, appNS string) config.App {
		a := config.App{Name: name, AppNamespace: appNS, Namespace: "x",
			Source: config.Source{URL: "https://example.com/" + name + ".git", SecretRef: &config.SecretRef{Name: "git"}}}
		a.Defaults()
		return a
	}
	for _, tc := range []struct {
		name    string
		apps    []config.App
		wantErr string
	}{
		{name: "App object: its namespace", apps: []config.App{app("a", "team-a")}},
		{name: "Config entry: refit's namespace", apps: []config.App{app("c", "")}},
		{name: "App then Config entry", apps: []config.App{app("a", "team-a"), app("c", "")}},
		{name: "no Secret in the App's namespace, though refit's has one", apps: []config.App{app("b", "team-b")},
			wantErr: `secret team-b/git: secrets "git" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &appWiring{client: client, secretsNS: "refit-system", cacheDir: t.TempDir()}
			_, err := w.build(t.Context(), tc.apps)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("build: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("build error = %v; want %q", err, tc.wantErr)
			}
			if w.secretsNS != "refit-system" {
				t.Errorf("secretsNS after build = %q", w.secretsNS)
			}
		})
	}
}
