//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/test/gitserver"
)

// withAppCRD installs the App CRD for the test and removes it after, and
// returns the client of Apps in ns; the Apps named are freed of their
// finalizers at the end (once refit is stopped nothing else would).
func withAppCRD(t *testing.T, ns string, names ...string) dynamic.ResourceInterface {
	t.Helper()
	installAppCRD(t)
	dyn, err := dynamic.NewForConfig(bed.Config)
	if err != nil {
		t.Fatal(err)
	}
	apps := dyn.Resource(appsResource).Namespace(ns)
	t.Cleanup(func() {
		for _, name := range names {
			_, _ = apps.Patch(context.Background(), name, types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
			// App names are unique in a cluster: a later test's App (or
			// CLI app) of this name must not find this one's inventory.
			_ = bed.Client.CoreV1().ConfigMaps(apply.DefaultInventoryNamespace).Delete(context.Background(), apply.InventoryName(name), metav1.DeleteOptions{})
		}
	})
	return apps
}

// gitSecret puts the Git server's credentials in ns as Secret "git".
func gitSecret(t *testing.T, ns string, srv *gitserver.Server) {
	t.Helper()
	_, err := bed.Client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git"},
		StringData: map[string]string{"username": srv.Username(), "password": srv.Password()},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// appSeen is the App as one watch event showed it.
type appSeen struct {
	at       time.Duration
	rollouts []v1alpha1.RolloutStatus
	ready    metav1.ConditionStatus
	reconc   metav1.ConditionStatus
	applied  string
}

// TestAppsWebhookAndRolloutProgress: an App that polls hourly is moved by
// its webhook (/hook/<namespace>/<name>, Gitea-signed, the secret in the
// App's namespace): a signed push makes it Ready at the new commit within
// seconds, after the Secret is rotated a push signed with the new secret
// is taken, and at the end a bad signature is refused and triggers
// nothing. The rotated secret's push bumps an image: while the in-place rollout runs (a gated Deployment
// of 6 Pods, 2 at a time, each restart 3 s) the App's status shows the
// workload's Pods done rising, Ready not True and Reconciling True; once
// done the rollouts are gone and the App is Ready at the new commit. Seen
// from a watch on the App, and once with kubectl get -o yaml.
func TestAppsWebhookAndRolloutProgress(t *testing.T) {
	start := time.Now()
	stage := func(what string) { t.Logf("%s at %s", what, time.Since(start).Round(100*time.Millisecond)) }
	ns := namespace(t)
	apps := withAppCRD(t, ns, "web")
	srv := gitserver.New(t, gitserver.DefaultOptions())
	gitSecret(t, ns, srv)
	const oldSecret, newSecret = "webhook-secret-one-0123456789", "webhook-secret-two-0123456789"
	hookSecret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook"}, StringData: map[string]string{"secret": oldSecret}}
	if _, err := bed.Client.CoreV1().Secrets(ns).Create(t.Context(), hookSecret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	repo := srv.NewRepo(t, "web")
	w := workload{kind: "Deployment", name: "web", replicas: 6, maxUnavailable: "2", restartDelay: "3s", image: "app:1", gate: true,
		annotations: map[string]string{"refit.dev/grace-seconds": "0"}}
	files := func(w workload, mode string) map[string]string {
		return map[string]string{
			"deploy/kustomization.yaml": "resources: [web.yaml, settings.yaml]\nnamespace: " + ns + "\n",
			"deploy/web.yaml":           w.yaml(),
			"deploy/settings.yaml":      "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: " + mode + "}\n",
		}
	}
	first := repo.Commit(files(w, "a"), "web 1")
	svc := startService(t, nil, "--watch-namespace", ns, "--grace", "0s")
	spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: deploy\n  interval: 1h\n  timeout: 2m\n"+
		"  webhook: {provider: gitea, secretSecretRef: {name: hook}}\n", repo.HTTPURL())
	if out, err := kubectl([]byte(appDoc(ns, "web", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	waitSettled(t, ns, 6, "app", "app:1", 60*time.Second)
	readyAt := func(sha string) func(context.Context) bool {
		return func(context.Context) bool {
			app := getApp(t, apps, "web")
			return meta.IsStatusConditionTrue(app.Status.Conditions, "Ready") && strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+sha)
		}
	}
	waitFor(t, 30*time.Second, "the App Ready", readyAt(first))
	stage("created: Ready")

	// The webhook: a signed push is applied at once.
	path := ns + "/web"
	second := repo.Commit(files(w, "b"), "settings b")
	if code := postGiteaHook(t, svc.addr, path, oldSecret, repo.HTTPURL()); code != 202 {
		t.Fatalf("a signed webhook: status %d, want 202", code)
	}
	took := waitFor(t, 10*time.Second, "the App Ready at the pushed commit (interval 1h: only the webhook polls)", readyAt(second))
	t.Logf("webhook to Ready at the new commit: %s", took.Round(100*time.Millisecond))
	stage("webhook: Ready")

	// The Secret rotated: the new secret is taken at its first delivery.
	hookSecret.StringData["secret"] = newSecret
	if _, err := bed.Client.CoreV1().Secrets(ns).Update(t.Context(), hookSecret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := apps.Get(t.Context(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := apps.Watch(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=web", ResourceVersion: u.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Stop()
	head := repo.Commit(files(w.with(func(w *workload) { w.image = "app:2" }), "b"), "web 2")
	if code := postGiteaHook(t, svc.addr, path, newSecret, repo.HTTPURL()); code != 202 {
		t.Fatalf("a webhook signed with the rotated secret: status %d, want 202", code)
	}
	began := time.Now()
	var seen []appSeen
	yamlShown := false
	timeout := time.After(90 * time.Second)
	for done := false; !done; {
		select {
		case ev, ok := <-watch.ResultChan():
			if !ok {
				t.Fatal("the watch on the App ended")
			}
			obj, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			var app v1alpha1.App
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &app); err != nil {
				t.Fatal(err)
			}
			cond := func(typ string) metav1.ConditionStatus {
				if c := meta.FindStatusCondition(app.Status.Conditions, typ); c != nil {
					return c.Status
				}
				return ""
			}
			s := appSeen{at: time.Since(began), rollouts: app.Status.Rollouts, ready: cond("Ready"), reconc: cond("Reconciling"),
				applied: app.Status.LastAppliedRevision}
			seen = append(seen, s)
			if len(s.rollouts) > 0 && !yamlShown {
				// What a user sees.
				out, err := kubectl(nil, "-n", ns, "get", "apps.refit.dev", "web", "-o", "yaml")
				if err != nil {
					t.Fatalf("kubectl get: %v\n%s", err, out)
				}
				yamlShown = true
				if !strings.Contains(out, "rollouts:") || !strings.Contains(out, "podsTotal: 6") {
					t.Errorf("kubectl get -o yaml mid-rollout shows no rollout:\n%s", out)
				}
			}
			done = s.ready == metav1.ConditionTrue && strings.HasSuffix(s.applied, "@sha1:"+head)
		case <-timeout:
			t.Fatalf("the App not Ready at %s within 90 s; seen: %+v", head, seen)
		}
	}
	stage("rolled out: Ready")
	var done []int32
	for _, s := range seen {
		t.Logf("%5s: ready %s, reconciling %s, rollouts %+v", s.at.Round(100*time.Millisecond), s.ready, s.reconc, s.rollouts)
		if len(s.rollouts) == 0 {
			continue
		}
		r := s.rollouts[0]
		if len(s.rollouts) != 1 || r.Workload.Kind != "Deployment" || r.Workload.Name != "web" || r.Workload.Namespace != ns || r.PodsTotal != 6 {
			t.Errorf("rollouts %+v, want the Deployment %s/web's, of 6 Pods", s.rollouts, ns)
		}
		if s.ready == metav1.ConditionTrue || s.reconc != metav1.ConditionTrue {
			t.Errorf("at %s: Ready %s and Reconciling %s while a rollout runs, want Ready not True, Reconciling True", s.at, s.ready, s.reconc)
		}
		if n := len(done); n == 0 || done[n-1] != r.PodsDone {
			done = append(done, r.PodsDone)
		}
	}
	// 3 batches of 3 s: the start and at least one batch are reported (a
	// report at most every 2 s), in order.
	if len(done) < 2 {
		t.Errorf("podsDone seen %v: want it rising as batches finish", done)
	}
	for i := 1; i < len(done); i++ {
		if done[i] < done[i-1] {
			t.Errorf("podsDone seen %v: went down", done)
		}
	}
	if last := seen[len(seen)-1]; len(last.rollouts) != 0 {
		t.Errorf("Ready, yet rollouts %+v remain", last.rollouts)
	}
	waitSettled(t, ns, 6, "app", "app:2", 10*time.Second)

	// A bad signature is refused and polls nothing.
	last := repo.Commit(files(w.with(func(w *workload) { w.image = "app:2" }), "c"), "settings c")
	if code := postGiteaHook(t, svc.addr, path, "forged-secret-0123456789", repo.HTTPURL()); code != 401 && code != 403 {
		t.Errorf("a forged webhook: status %d, want 401 or 403", code)
	}
	consistentlyTrue(t, 3*time.Second, "a forged webhook triggers nothing", func(ctx context.Context) (bool, string) {
		return !readyAt(last)(ctx), "the App moved to the new commit"
	})
	stage("forged webhook refused")
}

// postGiteaHook posts a push event of repoURL to /hook/<path>, signed with
// secret as Gitea signs it, and returns the status.
func postGiteaHook(t *testing.T, addr, path, secret, repoURL string) int {
	t.Helper()
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, repoURL))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/hook/"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "push")
	req.Header.Set("X-Gitea-Delivery", fmt.Sprint(time.Now().UnixNano()))
	req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}
