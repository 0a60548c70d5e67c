//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/test/gitserver"
)

// installAppCRD installs deploy/crds for the test and removes it after.
func installAppCRD(t *testing.T) {
	t.Helper()
	if out, err := kubectl(nil, "apply", "--server-side", "-k", filepath.Join(deployDir, "crds")); err != nil {
		t.Fatalf("install the CRD: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// Waited for: a later test (TestDeploy) installs the CRD again, and
		// a CRD still terminating would vanish under it.
		if out, err := kubectl(nil, "delete", "--ignore-not-found", "--timeout=30s", "crd", "apps.refit.dev"); err != nil {
			t.Errorf("uninstall the CRD: %v\n%s", err, out)
		}
	})
	if out, err := kubectl(nil, "wait", "--for=condition=Established", "--timeout=30s", "crd/apps.refit.dev"); err != nil {
		t.Fatalf("CRD not established: %v\n%s", err, out)
	}
}

// appsWithGitSecret makes the Secret "git" in ns with the Git server's
// credentials, for Apps' secretRef, and returns the client of ns's Apps.
func appsWithGitSecret(t *testing.T, ns string, srv *gitserver.Server) dynamic.ResourceInterface {
	t.Helper()
	if _, err := bed.Client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git"},
		StringData: map[string]string{"username": srv.Username(), "password": srv.Password()},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	return dyn.Resource(appsResource).Namespace(ns)
}

// TestAppsReconcileRequestPollsFirst: an App polling every hour; a commit
// is pushed; `refit reconcile app` returns only once the App is Ready at
// that commit — the request polls the repository first. Before, the loop
// restarted on the commit the shared poller had last seen (its poller
// lingers across the restart), and the command said Ready at the old one.
func TestAppsReconcileRequestPollsFirst(t *testing.T) {
	installAppCRD(t)
	ns := namespace(t)
	ctx := context.Background()
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "asked")
	files := func(v string) map[string]string {
		return map[string]string{"deploy/cm.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: %s}\ndata: {v: %q}\n", ns, v)}
	}
	repo.Commit(files("1"), "one")
	apps := appsWithGitSecret(t, ns, srv)
	startService(t, nil, "--watch-namespace", ns, "--grace", "0s")
	spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: deploy\n  interval: 1h\n  timeout: 1m\n", repo.HTTPURL())
	if out, err := kubectl([]byte(appDoc(ns, "asked", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	t.Cleanup(func() { // refit stops first (cleanups run last first): nothing else removes the finalizer
		_, _ = apps.Patch(context.Background(), "asked", "application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
	})
	configMap := func(ctx context.Context) string {
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return cm.Data["v"]
	}
	waitFor(t, 45*time.Second, "the App's ConfigMap applied", func(ctx context.Context) bool { return configMap(ctx) == "1" })

	head := repo.Commit(files("2"), "two")
	asked := time.Now()
	out, err := exec.Command(refit(t), "reconcile", "app", "asked", "-n", ns, "--kubeconfig", bed.Kubeconfig, "--timeout", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("refit reconcile app: %v\n%s", err, out)
	}
	took := time.Since(asked)
	app := getApp(t, apps, "asked")
	if !strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+head) || configMap(ctx) != "2" {
		t.Fatalf("refit reconcile app returned with the App at %s, ConfigMap v=%q; want the commit pushed before the request (%s), v=2\n%s",
			app.Status.LastAppliedRevision, configMap(ctx), head, out)
	}
	t.Logf("refit reconcile app: Ready at the pushed commit %.1f s after the request (interval 1h)", took.Seconds())
}
