//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestAppsGitCredentialsRotated: an App whose Git Secret holds HTTP basic
// credentials is Ready; the Git server's password is rotated (the old one
// revoked) and a commit pushed: the App goes Ready=False
// GitOperationFailed and nothing of the commit is applied, nor is the
// App's loop restarted while its Secret still holds the old password.
// Once the Secret holds the new password, the pushed commit is applied
// within seconds — refit re-reads the Secret on the refusal — with the
// App's generation unchanged.
func TestAppsGitCredentialsRotated(t *testing.T) {
	const appName = "rotated" // App names are unique in a cluster
	ns := namespace(t)
	apps := withAppCRD(t, ns, appName)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	gitSecret(t, ns, srv)
	repo := srv.NewRepo(t, "shop")
	files := func(v string) map[string]string {
		return map[string]string{"deploy/cm.yaml": fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: %s}\ndata: {v: %q}\n", ns, v)}
	}
	first := repo.Commit(files("1"), "one")
	svc := startService(t, nil, "--watch-namespace", ns, "--grace", "0s")
	spec := "  source: {url: " + repo.HTTPURL() + ", secretRef: {name: git}}\n  path: deploy\n  interval: 1s\n  timeout: 1m\n"
	if out, err := kubectl([]byte(appDoc(ns, appName, spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	waitAppReady(t, apps, ns, appName, first)
	generation := getApp(t, apps, appName).Generation
	configMap := func(ctx context.Context) string {
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, "settings", metav1.GetOptions{})
		if err != nil {
			return "error: " + err.Error()
		}
		return cm.Data["v"]
	}

	// The password rotated on the Git server, a commit pushed: refused.
	oldPassword := srv.Password()
	newPassword := srv.NewPassword()
	second := repo.Commit(files("2"), "two")
	var ready metav1.Condition
	waitFor(t, 30*time.Second, "the App Ready=False, reason GitOperationFailed, once its password is revoked", func(context.Context) bool {
		ready = readyCondition(getApp(t, apps, appName))
		return ready.Status == metav1.ConditionFalse && ready.Reason == v1alpha1.ReasonGitOperationFailed
	})
	t.Logf("refused: %s", ready.Message)
	for _, secret := range []string{oldPassword, newPassword} {
		if strings.Contains(ready.Message, secret) || strings.Contains(svc.out.String(), secret) {
			t.Errorf("a password is in the Ready message or refit's log: %q", ready.Message)
		}
	}
	started := strings.Count(svc.out.String(), "app started")
	consistentlyTrue(t, 3*time.Second, "nothing applied with refused credentials", func(ctx context.Context) (bool, string) {
		app := getApp(t, apps, appName)
		v := configMap(ctx)
		return v == "1" && strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+first),
			fmt.Sprintf("ConfigMap v=%q, lastAppliedRevision %s", v, app.Status.LastAppliedRevision)
	})
	if n := strings.Count(svc.out.String(), "app started"); n != started {
		t.Errorf("the App's loop started %d times while its Secret was unchanged, want none", n-started)
	}

	// The Secret updated with the new password: the commit is applied.
	sec, err := bed.Client.CoreV1().Secrets(ns).Get(t.Context(), "git", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec = sec.DeepCopy()
	sec.Data = map[string][]byte{"username": []byte(srv.Username()), "password": []byte(newPassword)}
	updated := time.Now()
	if _, err := bed.Client.CoreV1().Secrets(ns).Update(t.Context(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the App Ready at "+second+" with the rotated password", func(context.Context) bool {
		app := getApp(t, apps, appName)
		return readyCondition(app).Status == metav1.ConditionTrue && strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+second)
	})
	took := time.Since(updated)
	t.Logf("Secret updated to Ready at the pushed commit: %.1f s", took.Seconds())
	if v := configMap(t.Context()); v != "2" {
		t.Errorf("ConfigMap v=%q once Ready at %s, want 2", v, second)
	}
	app := getApp(t, apps, appName)
	if app.Generation != generation {
		t.Errorf("App generation %d after the rotation, want %d (no spec change)", app.Generation, generation)
	}
	if took > 20*time.Second {
		t.Errorf("%s from the Secret's update to Ready: the re-read is due within 5 s of the refusal, 10 s later at most here", took.Round(100*time.Millisecond))
	}
	evs, err := bed.Client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.kind=App,involvedObject.name=" + appName})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Items {
		if strings.Contains(ev.Message, oldPassword) || strings.Contains(ev.Message, newPassword) {
			t.Errorf("Event %s %s holds a password", ev.Type, ev.Reason)
		}
		if ev.Type == corev1.EventTypeWarning {
			t.Logf("event %s %s: %s", ev.Type, ev.Reason, ev.Message)
		}
	}
}
