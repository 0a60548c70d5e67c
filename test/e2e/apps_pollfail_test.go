//go:build e2e

package e2e

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestAppGitOperationFailed: an App Ready at commit C whose repository is
// deleted on the Git server (its bare directory moved away: the server
// answers "not found") goes Ready=False, reason GitOperationFailed, with a
// message naming the repository and no credential, lastAppliedRevision
// still C; its polls retry every second meanwhile, yet the App's status is
// written once and one Warning Event is recorded. The repository back, with
// no new commit, the App is Ready at C again.
func TestAppGitOperationFailed(t *testing.T) {
	const appName = "gitfail"
	ns, apps, srv, repo, head := shopOnGit(t, appName)
	svc := startService(t, nil, "--watch-namespace", ns, "--grace", "0s")
	createShopApp(t, ns, appName, repo)
	waitAppReady(t, apps, ns, appName, head)
	began := time.Now()
	stage := func(what string) { t.Logf("%s at %s", what, time.Since(began).Round(100*time.Millisecond)) }

	// Every status write from now on, as a watch sees it.
	u, err := apps.Get(t.Context(), appName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	watch, err := apps.Watch(t.Context(), metav1.ListOptions{FieldSelector: "metadata.name=" + appName, ResourceVersion: u.GetResourceVersion()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var writes []metav1.Condition // the Ready condition of each write
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for ev := range watch.ResultChan() {
			obj, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			var app v1alpha1.App
			if runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &app) != nil {
				continue
			}
			mu.Lock()
			writes = append(writes, readyCondition(&app))
			mu.Unlock()
		}
	}()
	stopWatch := func() []metav1.Condition {
		watch.Stop()
		<-watched
		mu.Lock()
		defer mu.Unlock()
		return writes
	}
	defer watch.Stop()

	// The repository deleted on the server.
	bare := srv.RepoPath("shop")
	if err := os.Rename(bare, bare+".deleted"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := os.Rename(bare+".deleted", bare); err != nil {
				t.Fatal(err)
			}
		}
	}
	defer restore()
	pollsBefore := strings.Count(svc.out.String(), "poll failed")
	var ready metav1.Condition
	waitFor(t, 30*time.Second, "the App Ready=False, reason GitOperationFailed", func(context.Context) bool {
		ready = readyCondition(getApp(t, apps, appName))
		return ready.Status == metav1.ConditionFalse && ready.Reason == v1alpha1.ReasonGitOperationFailed
	})
	stage("repository deleted: GitOperationFailed")
	t.Logf("Ready message: %s", ready.Message)
	if !strings.Contains(ready.Message, repo.HTTPURL()) {
		t.Errorf("Ready message %q does not name the repository %s", ready.Message, repo.HTTPURL())
	}
	for _, secret := range []string{srv.Password(), srv.Username() + ":"} {
		if strings.Contains(ready.Message, secret) {
			t.Errorf("Ready message %q holds a credential (%q)", ready.Message, secret)
		}
	}
	app := getApp(t, apps, appName)
	if !strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+head) {
		t.Errorf("lastAppliedRevision %s while Git fails, want still %s", app.Status.LastAppliedRevision, head)
	}
	if u, err := apps.Get(t.Context(), appName, metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if res, err := status.Compute(u); err != nil || res.Status != status.InProgressStatus {
		t.Errorf("kstatus while Git fails: %v (%v), want InProgress (retrying)", res, err)
	}
	// The polls retry (backoff up to the 1 s interval): the status stays,
	// and is not written again.
	consistentlyTrue(t, 8*time.Second, "the App stays GitOperationFailed while the repository is gone", func(context.Context) (bool, string) {
		c := readyCondition(getApp(t, apps, appName))
		return c.Reason == v1alpha1.ReasonGitOperationFailed && c.Message == ready.Message, "Ready is now " + c.Reason + ": " + c.Message
	})
	retries := strings.Count(svc.out.String(), "poll failed") - pollsBefore
	stage("retried")

	// The repository back, no new commit: Ready at the same commit again.
	restore()
	waitFor(t, 30*time.Second, "the App Ready again at "+head, func(context.Context) bool {
		app := getApp(t, apps, appName)
		c := readyCondition(app)
		return c.Status == metav1.ConditionTrue && strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+head)
	})
	stage("repository back: Ready")
	if app := getApp(t, apps, appName); !strings.HasSuffix(app.Status.LastAttemptedRevision, "@sha1:"+head) {
		t.Errorf("lastAttemptedRevision %s, want %s (no new commit)", app.Status.LastAttemptedRevision, head)
	}

	failedWrites := 0
	for _, c := range stopWatch() {
		t.Logf("status write: Ready %s %s: %s", c.Status, c.Reason, c.Message)
		if c.Reason == v1alpha1.ReasonGitOperationFailed {
			failedWrites++
		}
	}
	var warnings int32
	evs, err := bed.Client.CoreV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.kind=App,involvedObject.name=" + appName})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs.Items {
		if ev.Type == corev1.EventTypeWarning && ev.Reason == string(v1alpha1.GitOperationFailed) {
			// The recorder folds repeats into one Event with a count.
			warnings += max(ev.Count, 1)
			if ev.Series != nil {
				warnings += ev.Series.Count - 1
			}
			if strings.Contains(ev.Message, srv.Password()) {
				t.Errorf("Event message %q holds the password", ev.Message)
			}
		}
	}
	t.Logf("failing period: %d polls failed, %d status writes with GitOperationFailed, %d Warning Events GitOperationFailed", retries, failedWrites, warnings)
	if retries < 3 {
		t.Errorf("%d polls failed while the repository was gone (8 s, interval 1 s): want the retries this test is about", retries)
	}
	if failedWrites != 1 || warnings != 1 {
		t.Errorf("%d status writes and %d Warning Events for one failing period, want 1 and 1", failedWrites, warnings)
	}
}

// TestAppGitOperationFailedBeforeFirstSync: an App created while its
// repository is gone shows the failure (Ready=False, GitOperationFailed,
// no revision applied); once the repository is there, it syncs and is
// Ready.
func TestAppGitOperationFailedBeforeFirstSync(t *testing.T) {
	const appName = "gitfail-first"
	ns, apps, srv, repo, head := shopOnGit(t, appName)
	bare := srv.RepoPath("shop")
	if err := os.Rename(bare, bare+".deleted"); err != nil {
		t.Fatal(err)
	}
	startService(t, nil, "--watch-namespace", ns, "--grace", "0s")
	createShopApp(t, ns, appName, repo)
	var app *v1alpha1.App
	waitFor(t, 30*time.Second, "the new App Ready=False, reason GitOperationFailed", func(context.Context) bool {
		app = getApp(t, apps, appName)
		c := readyCondition(app)
		return c.Status == metav1.ConditionFalse && c.Reason == v1alpha1.ReasonGitOperationFailed
	})
	if c := readyCondition(app); !strings.Contains(c.Message, repo.HTTPURL()) || strings.Contains(c.Message, srv.Password()) {
		t.Errorf("Ready message %q: want the repository named, no password", c.Message)
	}
	if app.Status.LastAppliedRevision != "" {
		t.Errorf("lastAppliedRevision %q before any sync, want none", app.Status.LastAppliedRevision)
	}
	if err := os.Rename(bare+".deleted", bare); err != nil {
		t.Fatal(err)
	}
	waitAppReady(t, apps, ns, appName, head)
}

// shopOnGit is a namespace with the App CRD (for the App appName: App names
// are unique in a cluster, and other tests' Apps leave their inventories),
// a Git server with its Secret, and the repository "shop" at its first
// commit (head).
func shopOnGit(t *testing.T, appName string) (ns string, apps dynamic.ResourceInterface, srv *gitserver.Server, repo *gitserver.TestRepo, head string) {
	t.Helper()
	ns = namespace(t)
	apps = withAppCRD(t, ns, appName)
	srv = gitserver.New(t, gitserver.DefaultOptions())
	gitSecret(t, ns, srv)
	repo = srv.NewRepo(t, "shop")
	return ns, apps, srv, repo, repo.Commit(appFiles(ns, "shop:1.0", 1), "shop 1.0")
}

// createShopApp creates the App appName on repo, polled every second.
func createShopApp(t *testing.T, ns, appName string, repo *gitserver.TestRepo) {
	t.Helper()
	spec := "  source: {url: " + repo.HTTPURL() + ", secretRef: {name: git}}\n  path: deploy\n  interval: 1s\n  timeout: 1m\n"
	if out, err := kubectl([]byte(appDoc(ns, appName, spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
}
