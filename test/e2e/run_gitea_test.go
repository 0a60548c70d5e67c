//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refit-gitops/refit/test/gitea"
)

// The whole service path against a real Git host: a push to Gitea fires a
// webhook, refit deploys the image bump in place, and Gitea shows the
// commit status; a broken manifest shows failure with the reason and
// changes nothing in the cluster.
func TestRunWithGiteaWebhooksAndCommitStatus(t *testing.T) {
	ns := namespace(t)
	srv := giteaServer(t)
	ctx := context.Background()
	first := giteaRepo(t, srv, "shop", appFiles(ns, "shop:1.0", 6))

	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	secret := filepath.Join(dir, "hook")
	if err := os.WriteFile(token, []byte(srv.Token()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("hook-secret-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: shop
  source: {url: %s, passwordFile: %s, usernameFile: %s}
  path: deploy
  interval: 5m
  namespace: %s
  timeout: 1m
  status: {provider: gitea, apiURL: %s, tokenFile: %s}
  webhook: {provider: gitea, secretFile: %s}
`, srv.RepoURL("shop"), token, writeTemp(t, srv.Admin()), ns, srv.URL, token, secret)
	cfgFile := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := startServiceAt(t, addr, "--config", cfgFile, "--grace", "0s")
	if _, err := srv.AddWebhook(ctx, "shop", "http://"+addr+"/hook/shop", "hook-secret-0123456789"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "6 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 6) })
	waitStatus(t, srv, first, "success")

	// The interval is 5 minutes: only the webhook can make this quick.
	bump, err := srv.Commit(ctx, "shop", appFiles(ns, "shop:1.1", 6), "shop 1.1")
	if err != nil {
		t.Fatal(err)
	}
	latency := waitFor(t, 30*time.Second, "the first pod patched after the push", func(ctx context.Context) bool { return podsPatched(ctx, ns) > 0 })
	t.Logf("git push to Gitea → webhook → first pod patched: %s", latency.Round(time.Millisecond))
	waitFor(t, time.Minute, "6 pods on shop:1.1", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.1", 6) })
	waitStatus(t, srv, bump, "success")

	broken := appFiles(ns, "shop:1.2", 6)
	broken["deploy/app.yaml"] = strings.Replace(broken["deploy/app.yaml"], "replicas: 6", "replicas: six", 1)
	bad, err := srv.Commit(ctx, "shop", broken, "broken replicas")
	if err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, srv, bad, "failure")
	if !strings.Contains(st.Description, "shop") {
		t.Errorf("failure status %q does not name the object", st.Description)
	}
	if !allPodsOn(ctx, ns, "shop:1.1", 6) {
		t.Errorf("the broken commit changed the pods")
	}
	_ = svc
}

// startServiceAt is startService on a chosen address (Gitea's webhook must
// know it before refit starts).
func startServiceAt(t *testing.T, addr string, args ...string) *service {
	t.Helper()
	s := startService(t, nil, append([]string{"--listen", addr}, args...)...)
	s.addr = addr
	return s
}

// waitStatus waits for refit's status on a commit to reach state.
func waitStatus(t *testing.T, srv *gitea.Server, sha, state string) gitea.CommitStatus {
	t.Helper()
	var last []gitea.CommitStatus
	var found gitea.CommitStatus
	err := waitCond(time.Minute, func(ctx context.Context) bool {
		sts, err := srv.Statuses(ctx, "shop", sha)
		if err != nil {
			return false
		}
		last = sts
		found = gitea.CommitStatus{}
		for _, s := range sts {
			if s.Context == "refit/shop" && s.ID > found.ID {
				found = s // the newest
			}
		}
		return found.State == state
	})
	if err != nil {
		t.Fatalf("commit %s: want refit/shop %s; statuses %+v", sha[:8], state, last)
	}
	return found
}

func waitCond(timeout time.Duration, cond func(ctx context.Context) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if cond(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
