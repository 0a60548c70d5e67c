//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/test/gitserver"
)

// monoApp is one app of a monorepo: a folder with a ConfigMap whose data
// says which version of the app it is, and a Deployment scaled to 0.
func monoApp(files map[string]string, i, version int) {
	dir := fmt.Sprintf("apps/app%d", i)
	files[dir+"/kustomization.yaml"] = "resources: [../../base, cm.yaml]\nnamePrefix: app" + strconv.Itoa(i) + "-\n"
	files[dir+"/cm.yaml"] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {version: %q}\n", strconv.Itoa(version))
}

// appReconciles reads refit_reconciles_total per app for one result.
func appReconciles(metrics, result string) map[string]int {
	out := map[string]int{}
	re := regexp.MustCompile(`refit_reconciles_total\{app="([^"]+)",name="[^"]*",namespace="[^"]*",result="` + regexp.QuoteMeta(result) + `"\} (\d+)`)
	for _, m := range re.FindAllStringSubmatch(metrics, -1) {
		n, _ := strconv.Atoi(m[2])
		out[m[1]] = n
	}
	return out
}

// TestSharedFetchOneRepositoryManyApps runs several apps of one
// repository (a shared base outside their paths) from the real Git
// server: the server sees one fetch per new commit, however many apps; a
// commit touching one app re-applies that app only, and the others say
// they skipped it.
func TestSharedFetchOneRepositoryManyApps(t *testing.T) {
	ns := namespace(t)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	const apps = 6
	files := map[string]string{
		"base/kustomization.yaml": "resources: [deploy.yaml]\n",
		"base/deploy.yaml": `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "web:1.0"}
`,
	}
	var cfg strings.Builder
	cfg.WriteString("apiVersion: refit.dev/v1alpha1\nkind: Config\napps:\n")
	user, pass := writeTemp(t, srv.Username()), writeTemp(t, srv.Password())
	for i := range apps {
		monoApp(files, i, 1)
		fmt.Fprintf(&cfg, `- name: app%d
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: apps/app%d
  interval: 1s
  driftInterval: 10m
  namespace: %s
`, i, repo.HTTPURL(), user, pass, i, ns)
	}
	repo.Commit(files, "six apps")
	svc := startService(t, nil, "--config", writeTemp(t, cfg.String()), "--grace", "0s", "--concurrent", "3")
	start := time.Now()
	settings := func(ctx context.Context, i int) string {
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, fmt.Sprintf("app%d-settings", i), metav1.GetOptions{})
		if err != nil {
			return ""
		}
		return cm.Data["version"]
	}
	waitFor(t, time.Minute, "every app applied", func(ctx context.Context) bool {
		for i := range apps {
			if settings(ctx, i) != "1" {
				return false
			}
		}
		return len(appReconciles(svc.metrics(t), "success")) == apps
	})
	if got := srv.Counts("mono"); got.Fetches != 1 {
		t.Errorf("%d apps on one commit: the server saw %+v, want 1 fetch", apps, got)
	}

	// One commit changes app 2: one more fetch; app 2 alone is applied.
	monoApp(files, 2, 2)
	repo.Commit(map[string]string{"apps/app2/cm.yaml": files["apps/app2/cm.yaml"]}, "app2 v2")
	waitFor(t, 30*time.Second, "app2 at version 2", func(ctx context.Context) bool { return settings(ctx, 2) == "2" })
	waitFor(t, 30*time.Second, "app2's sync to end and every other app to skip the commit", func(context.Context) bool {
		m := svc.metrics(t)
		return appReconciles(m, "success")["app2"] == 2 && len(appReconciles(m, "unchanged")) == apps-1
	})
	metrics := svc.metrics(t)
	success, unchanged := appReconciles(metrics, "success"), appReconciles(metrics, "unchanged")
	for i := range apps {
		name := fmt.Sprintf("app%d", i)
		wantSuccess, wantUnchanged := 1, 1
		if i == 2 {
			wantSuccess, wantUnchanged = 2, 0
		}
		if success[name] != wantSuccess || unchanged[name] != wantUnchanged {
			t.Errorf("%s: %d applied, %d skipped; want %d applied, %d skipped", name, success[name], unchanged[name], wantSuccess, wantUnchanged)
		}
	}
	elapsed := time.Since(start)
	got := srv.Counts("mono")
	if got.Fetches != 2 {
		t.Errorf("two commits: the server saw %d fetches, want 2", got.Fetches)
	}
	// One listing per second for the repository (and one per fetch), not
	// one per app: six apps polling apart would list six times as often.
	if maxLists := int(elapsed.Seconds()) + got.Fetches + 3; got.Lists > maxLists {
		t.Errorf("%d listings in %s: want at most %d (one per interval, not per app)", got.Lists, elapsed.Round(time.Second), maxLists)
	}
	t.Logf("%d apps, %s: server saw %d listings and %d fetches", apps, elapsed.Round(time.Millisecond), got.Lists, got.Fetches)
	if !strings.Contains(svc.out.String(), "outcome=unchanged") {
		t.Errorf("no log line says an app skipped the commit")
	}
}
