//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/test/gitserver"
)

// TestAppDeletedStopsListings: refit run in App mode polls an App's
// repository every second; once the App is deleted, and the Hub's linger
// (5 s) has passed, the Git server sees no more listings of it. Before,
// the repository's poller ran until refit restarted.
func TestAppDeletedStopsListings(t *testing.T) {
	installAppCRD(t)
	ns := namespace(t)
	ctx := context.Background()
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "gone")
	repo.Commit(map[string]string{"deploy/cm.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: %s}\ndata: {v: \"1\"}\n", ns)}, "one")
	apps := appsWithGitSecret(t, ns, srv)
	startService(t, nil, "--grace", "0s")
	spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: deploy\n  interval: 1s\n  timeout: 1m\n  prune: false\n", repo.HTTPURL())
	if out, err := kubectl([]byte(appDoc(ns, "gone", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	waitFor(t, 45*time.Second, "the App's ConfigMap applied", func(ctx context.Context) bool {
		_, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{})
		return err == nil
	})
	t0 := time.Now()
	before := srv.Counts("gone").Lists
	waitFor(t, 15*time.Second, "listings every second while the App exists", func(context.Context) bool {
		return srv.Counts("gone").Lists >= before+3
	})
	t.Logf("applied; %d listings", before)
	if err := apps.Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the App gone", func(ctx context.Context) bool {
		_, err := apps.Get(ctx, "gone", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	t.Logf("App gone after %v", time.Since(t0))
	// The linger, then listings stop: two seconds without one.
	last, since := srv.Counts("gone").Lists, time.Now()
	waitFor(t, 20*time.Second, "no listing for 2s after the App went", func(context.Context) bool {
		if n := srv.Counts("gone").Lists; n != last {
			last, since = n, time.Now()
		}
		return time.Since(since) >= 2*time.Second
	})
	t.Logf("listings stopped %v after the App went, at %d", time.Since(t0), last)
	consistentlyTrue(t, 3*time.Second, "no more listings", func(context.Context) (bool, string) {
		n := srv.Counts("gone").Lists
		return n == last, fmt.Sprintf("%d listings, %d before", n, last)
	})
}
