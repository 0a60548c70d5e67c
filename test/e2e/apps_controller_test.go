//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/test/gitserver"
)

// TestAppsController runs refit run with no config: it watches App
// objects. The lifecycle as a user sees it: an App becomes Ready at the
// head commit (kubectl wait, kstatus), with its Git credentials from a
// Secret in the App's namespace; a new commit is applied; a suspended App
// is left alone; refit reconcile app is handled; deleting an App prunes
// what it applied, and not with prune: false.
func TestAppsController(t *testing.T) {
	// No CRD: refit run says so and stops, rather than waiting on a list
	// that cannot succeed.
	bin := refit(t) // built first: the build is not what the deadline bounds
	noCRD, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(noCRD, bin, "run", "--kubeconfig", bed.Kubeconfig, "--listen", "", "--cache-dir", t.TempDir()).CombinedOutput()
	if err == nil || noCRD.Err() != nil || !strings.Contains(string(out), "apps.refit.dev: not installed") {
		t.Fatalf("refit run with no CRD: %v\n%s", err, out)
	}
	installAppCRD(t)
	ns := namespace(t)
	ctx := context.Background()
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "shop")
	head := repo.Commit(appFiles(ns, "shop:1.0", 2), "shop 1.0")
	// The credentials are in the App's namespace only: refit's own
	// (refit-system) has no such Secret.
	_, err = bed.Client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git"},
		StringData: map[string]string{"username": srv.Username(), "password": srv.Password()},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	apps := dyn.Resource(appsResource).Namespace(ns)
	t.Cleanup(func() {
		// Once refit is stopped (cleanups run last first) nothing removes
		// the finalizers of Apps a failed test left: the CRD's deletion
		// would wait for them.
		for _, name := range []string{"shop", "keep"} {
			_, _ = apps.Patch(context.Background(), name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
	})
	svc := startService(t, nil, "--watch-namespace", ns, "--grace", "0s")
	spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: deploy\n  interval: 1s\n  timeout: 1m\n", repo.HTTPURL())
	if out, err := kubectl([]byte(appDoc(ns, "shop", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	waitApp := func(what, sha string) {
		t.Helper()
		if out, err := exec.Command(bed.Tools.Kubectl, "--kubeconfig", bed.Kubeconfig, "-n", ns, "wait", "--for=condition=Ready",
			"--timeout=45s", "apps.refit.dev/shop").CombinedOutput(); err != nil {
			t.Fatalf("%s: kubectl wait: %v\n%s", what, err, out)
		}
		waitFor(t, 30*time.Second, what+": Ready at "+sha, func(ctx context.Context) bool {
			app := getApp(t, apps, "shop")
			return strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+sha) && app.Status.ObservedGeneration == app.Generation
		})
		u, err := apps.Get(ctx, "shop", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := status.Compute(u); err != nil || res.Status != status.CurrentStatus {
			t.Errorf("%s: kstatus %v (%v), want Current", what, res, err)
		}
	}
	began := time.Now()
	stage := func(what string) { t.Logf("%s at %s", what, time.Since(began).Round(100*time.Millisecond)) }
	waitApp("created", head)
	stage("created: Ready")
	if !allPodsOn(ctx, ns, "shop:1.0", 2) {
		t.Errorf("created: pods not on shop:1.0")
	}
	if app := getApp(t, apps, "shop"); !slices.Contains(app.Finalizers, "refit.dev/prune") {
		t.Errorf("finalizers %v: want refit.dev/prune", app.Finalizers)
	}

	// Update: a new commit is applied and the status follows it.
	head = repo.Commit(appFiles(ns, "shop:1.1", 2), "shop 1.1")
	waitFor(t, 45*time.Second, "2 pods on shop:1.1", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.1", 2) })
	waitApp("updated", head)
	stage("updated: Ready")

	// Suspend: a new commit is not applied.
	patchApp(t, apps, `{"spec":{"suspend":true}}`)
	waitFor(t, 10*time.Second, "the suspend observed", func(context.Context) bool {
		app := getApp(t, apps, "shop")
		return app.Status.ObservedGeneration == app.Generation
	})
	next := repo.Commit(appFiles(ns, "shop:1.2", 2), "shop 1.2")
	consistentlyTrue(t, 4*time.Second, "a suspended App's pods stay on shop:1.1", func(ctx context.Context) (bool, string) {
		return allPodsOn(ctx, ns, "shop:1.1", 2), "pods moved"
	})

	// Resume, then refit reconcile app: handled, Ready at the head.
	patchApp(t, apps, `{"spec":{"suspend":false}}`)
	waitFor(t, 45*time.Second, "2 pods on shop:1.2", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.2", 2) })
	out, err = exec.Command(refit(t), "reconcile", "app", "shop", "-n", ns, "--kubeconfig", bed.Kubeconfig, "--timeout", "30s").CombinedOutput()
	if err != nil {
		t.Fatalf("refit reconcile app: %v\n%s", err, out)
	}
	app := getApp(t, apps, "shop")
	if app.Status.LastHandledReconcileAt == "" || app.Status.LastHandledReconcileAt != app.Annotations["refit.dev/reconcile-at"] {
		t.Errorf("lastHandledReconcileAt %q, annotation %q", app.Status.LastHandledReconcileAt, app.Annotations["refit.dev/reconcile-at"])
	}
	waitApp("reconciled", next)
	stage("suspended, resumed, reconciled: Ready")

	// Delete with prune: what it applied goes, then the App.
	if err := apps.Delete(ctx, "shop", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the Deployment pruned and the App gone", func(ctx context.Context) bool {
		_, derr := bed.Client.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{})
		_, aerr := apps.Get(ctx, "shop", metav1.GetOptions{})
		return apierrors.IsNotFound(derr) && apierrors.IsNotFound(aerr)
	})

	stage("deleted and pruned")
	noInventory := func(app string) {
		t.Helper()
		waitFor(t, 10*time.Second, "the inventory of "+app+" deleted with the App", func(ctx context.Context) bool {
			_, err := bed.Client.CoreV1().ConfigMaps("refit-system").Get(ctx, "refit-inventory-"+app, metav1.GetOptions{})
			return apierrors.IsNotFound(err)
		})
	}
	noInventory("shop")

	// Delete with prune: false: the objects stay.
	if out, err := kubectl([]byte(appDoc(ns, "keep", spec+"  prune: false\n")), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	waitFor(t, 45*time.Second, "the kept App's Deployment", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.2", 2) })
	waitFor(t, 30*time.Second, "the kept App Ready", func(context.Context) bool {
		return strings.HasSuffix(getApp(t, apps, "keep").Status.LastAppliedRevision, next)
	})
	if err := apps.Delete(ctx, "keep", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the kept App gone", func(ctx context.Context) bool {
		_, err := apps.Get(ctx, "keep", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if _, err := bed.Client.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{}); err != nil {
		t.Errorf("prune: false: the Deployment: %v", err)
	}
	noInventory("keep")
	stage("prune: false: deleted")
	_ = svc
}

func patchApp(t *testing.T, apps dynamic.ResourceInterface, patch string) {
	t.Helper()
	if _, err := apps.Patch(context.Background(), "shop", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patch app: %v", err)
	}
}
