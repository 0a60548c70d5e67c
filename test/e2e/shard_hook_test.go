//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/shard"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestShardRunWebhook: three `refit run --shard` replicas, one App that
// polls hourly and has a Gitea webhook. A push signed with the App's
// secret, delivered to each replica's --listen address in turn (the owner
// and the two that do not run the App), makes the App Ready at the pushed
// commit within seconds; a forged delivery to a replica that does not run
// the App is refused and writes nothing (no poll-at, no move).
func TestShardRunWebhook(t *testing.T) {
	refit(t) // built once per run, by the first test: not this test's time
	began := time.Now()
	stage := func(what string) { t.Logf("%s at %s", what, time.Since(began).Round(100*time.Millisecond)) }
	ns, home := namespace(t), namespace(t) // the App; the replicas' Leases
	apps := withAppCRD(t, ns, "web")
	srv := gitserver.New(t, gitserver.DefaultOptions())
	gitSecret(t, ns, srv)
	const secret = "shard-webhook-secret-0123456789"
	if _, err := bed.Client.CoreV1().Secrets(ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "hook"}, StringData: map[string]string{"secret": secret},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	repo := srv.NewRepo(t, "web")
	files := func(v int) map[string]string {
		return map[string]string{
			"deploy/kustomization.yaml": "resources: [cm.yaml]\nnamespace: " + ns + "\n",
			"deploy/cm.yaml":            fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {version: %q}\n", fmt.Sprint(v)),
		}
	}
	head := repo.Commit(files(0), "version 0")
	stage("CRD, Git server and Secrets")

	ids := []string{"r0", "r1", "r2"}
	replicas := map[string]*service{}
	for _, id := range ids {
		replicas[id] = startService(t, nil, "--watch-namespace", ns, "--grace", "0s", "--shard", "--identity", id,
			"--leader-election-namespace", home, "--shard-lease-duration", "4s", "--shard-renew-interval", "1s",
			"--shard-renew-deadline", "2500ms")
	}
	waitFor(t, 30*time.Second, "three member Leases", func(ctx context.Context) bool {
		l, err := bed.Client.CoordinationV1().Leases(home).List(ctx, metav1.ListOptions{LabelSelector: shard.LabelKey + "=" + shard.RoleMember})
		return err == nil && len(l.Items) == 3
	})
	time.Sleep(2 * time.Second) // every replica sees the others (a watch)
	stage("three members")
	spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: deploy\n  interval: 1h\n  timeout: 1m\n"+
		"  webhook: {provider: gitea, secretSecretRef: {name: hook}}\n", repo.HTTPURL())
	if out, err := kubectl([]byte(appDoc(ns, "web", spec)), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("create the App: %v\n%s", err, out)
	}
	readyAt := func(sha string) func(context.Context) bool {
		return func(context.Context) bool {
			app := getApp(t, apps, "web")
			return apimeta.IsStatusConditionTrue(app.Status.Conditions, "Ready") && strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+sha)
		}
	}
	waitFor(t, 30*time.Second, "the App Ready", readyAt(head))
	var owner string
	var others []string
	for _, id := range ids {
		if strings.Contains(replicas[id].out.String(), "app started") {
			owner = id
		} else {
			others = append(others, id)
		}
	}
	if owner == "" || len(others) != 2 {
		t.Fatalf("the App started on %q, not on %v: want one owner", owner, others)
	}
	stage("the App Ready on " + owner)

	// A forged delivery to a replica that does not run the App: refused,
	// nothing written.
	next := repo.Commit(files(1), "version 1")
	before := getApp(t, apps, "web").Annotations["refit.dev/poll-at"]
	if code := postGiteaHook(t, replicas[others[0]].addr, ns+"/web", "forged-secret-0123456789abcdef", repo.HTTPURL()); code != 401 && code != 403 {
		t.Errorf("a forged webhook to %s: status %d, want 401 or 403", others[0], code)
	}
	consistentlyTrue(t, 3*time.Second, "a forged webhook writes nothing", func(ctx context.Context) (bool, string) {
		app := getApp(t, apps, "web")
		if at := app.Annotations["refit.dev/poll-at"]; at != before {
			return false, "poll-at set to " + at
		}
		return !readyAt(next)(ctx), "the App moved to the new commit"
	})

	// A signed push to each replica in turn: the others first, then the
	// owner; each one's commit is applied within seconds (only the
	// webhook polls: the interval is an hour).
	for i, id := range append(others, owner) {
		if i > 0 {
			next = repo.Commit(files(i+1), fmt.Sprintf("version %d", i+1))
		}
		if code := postGiteaHook(t, replicas[id].addr, ns+"/web", secret, repo.HTTPURL()); code != 202 {
			t.Fatalf("a signed webhook to %s: status %d, want 202", id, code)
		}
		took := waitFor(t, 15*time.Second, "the App Ready at the commit pushed to "+id, readyAt(next))
		t.Logf("webhook to %s (owner: %v): Ready at the new commit in %s", id, id == owner, took.Round(100*time.Millisecond))
	}
	stage("three webhooks applied")
	// poll-at polls without restarting the owner's loop.
	if n := strings.Count(replicas[owner].out.String(), "app started"); n != 1 {
		t.Errorf("the App's loop started %d times on %s, want once (a poll is no restart)", n, owner)
	}
	for _, id := range others {
		if !strings.Contains(replicas[id].out.String(), "webhook: owner asked to poll") {
			t.Errorf("%s did not say it asked the owner to poll", id)
		}
		if strings.Contains(replicas[id].out.String(), "app started") {
			t.Errorf("%s started the App it does not own", id)
		}
	}
}
