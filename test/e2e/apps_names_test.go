//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/test/gitserver"
)

// TestAppsControllerNameTaken: refit names an app's inventory, memory and
// metrics by its name alone, so a second App of one name in another
// namespace must not run — else deleting it would prune the first one's
// objects. It is refused (Stalled, naming the holder), and deleting it
// prunes nothing.
func TestAppsControllerNameTaken(t *testing.T) {
	installAppCRD(t)
	first, second := namespace(t), namespace(t)
	ctx := context.Background()
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "twin")
	repo.Commit(appFiles(first, "shop:1.0", 1), "shop 1.0")
	_, err := bed.Client.CoreV1().Secrets(first).Create(ctx, &corev1.Secret{
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
	appsOf := func(ns string) dynamic.ResourceInterface { return dyn.Resource(appsResource).Namespace(ns) }
	t.Cleanup(func() {
		for _, ns := range []string{first, second} {
			_, _ = appsOf(ns).Patch(context.Background(), "twin", types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
	})
	startService(t, nil, "--grace", "0s")
	spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: deploy\n  interval: 1s\n  timeout: 1m\n", repo.HTTPURL())
	if out, err := kubectl([]byte(appDoc(first, "twin", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the first App: %v\n%s", err, out)
	}
	waitFor(t, 45*time.Second, "the first App's Deployment running", func(ctx context.Context) bool { return allPodsOn(ctx, first, "shop:1.0", 1) })

	if out, err := kubectl([]byte(appDoc(second, "twin", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the second App: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "the second App refused, naming the first", func(context.Context) bool {
		app := getApp(t, appsOf(second), "twin")
		for _, c := range app.Status.Conditions {
			if c.Type == "Stalled" && c.Status == metav1.ConditionTrue && strings.Contains(c.Message, "taken by App "+first+"/twin") {
				return true
			}
		}
		return false
	})
	if err := appsOf(second).Delete(ctx, "twin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the second App gone", func(ctx context.Context) bool {
		_, err := appsOf(second).Get(ctx, "twin", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	consistentlyTrue(t, 3*time.Second, "the first App's Deployment stays", func(ctx context.Context) (bool, string) {
		_, err := bed.Client.AppsV1().Deployments(first).Get(ctx, "shop", metav1.GetOptions{})
		return err == nil, fmt.Sprint(err)
	})
}
