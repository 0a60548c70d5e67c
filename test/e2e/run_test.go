//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/gitserver"
)

// service is a `refit run` process under test.
type service struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	addr string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startService starts refit run with args and stops it when the test ends.
func startService(t *testing.T, env []string, args ...string) *service {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(refit(t), append([]string{"run", "--kubeconfig", bed.Kubeconfig, "--listen", addr, "--cache-dir", t.TempDir()}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	s := &service{cmd: cmd, out: &syncBuffer{}, addr: addr}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("refit run output:\n%s", s.out.String())
		}
	})
	return s
}

func (s *service) stop(sig syscall.Signal) {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(sig)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func (s *service) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func appFiles(ns, image string, replicas int) map[string]string {
	return map[string]string{
		"deploy/kustomization.yaml": "resources: [app.yaml]\nnamespace: " + ns + "\n",
		"deploy/app.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: shop}
spec:
  replicas: %d
  strategy: {rollingUpdate: {maxUnavailable: 2}}
  selector: {matchLabels: {app: shop}}
  template:
    metadata: {labels: {app: shop}}
    spec:
      containers:
      - {name: shop, image: %q}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: shop-settings}
data: {mode: fast}
`, replicas, image),
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func(ctx context.Context) bool) time.Duration {
	t.Helper()
	start := time.Now()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
	if err != nil {
		t.Fatalf("want %s within %s", what, timeout)
	}
	return time.Since(start)
}

func podsPatched(ctx context.Context, ns string) int {
	pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil {
		return 0
	}
	n := 0
	for _, p := range pods.Items {
		if _, ok := p.Annotations[inplace.StateAnnotation]; ok {
			n++
		}
	}
	return n
}

func allPodsOn(ctx context.Context, ns, image string, n int) bool {
	pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: notPrePull})
	if err != nil || len(pods.Items) != n {
		return false
	}
	for _, p := range pods.Items {
		cs := containerStatus(&p, "shop")
		if cs == nil || cs.Image != image || !podReady(&p) {
			return false
		}
	}
	return true
}

// The service's path: commit an app, refit run deploys it; commit an image
// bump, refit updates the Pods in place; a broken commit changes nothing;
// drift is put back; a webhook triggers a poll at once.
func TestRunKeepsTheClusterInSyncWithGit(t *testing.T) {
	ns := namespace(t)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "shop")
	repo.Commit(appFiles(ns, "shop:1.0", 6), "shop 1.0")

	hookSecret := "s3cret-hook-0123456789"
	secretFile := filepath.Join(t.TempDir(), "hook")
	if err := os.WriteFile(secretFile, []byte(hookSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "config.yaml")
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: shop
  source:
    url: %s
    usernameFile: %s
    passwordFile: %s
  path: deploy
  interval: 30s
  driftInterval: 2s
  namespace: %s
  timeout: 1m
  webhook: {provider: gitea, secretFile: %s}
`, repo.HTTPURL(), writeTemp(t, srv.Username()), writeTemp(t, srv.Password()), ns, secretFile)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	svc := startService(t, nil, "--config", cfgFile, "--grace", "0s")
	waitFor(t, time.Minute, "6 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 6) })
	before := waitReadyPods(t, ns, 6, nil)

	// A push and its webhook: the poll happens at once, not after 30 s.
	fw := watchFleet(t, ns)
	repo.Commit(appFiles(ns, "shop:1.1", 6), "shop 1.1")
	sendGiteaHook(t, svc.addr, "shop", hookSecret, repo.HTTPURL())
	latency := waitFor(t, 10*time.Second, "the first pod patched after the webhook", func(ctx context.Context) bool { return podsPatched(ctx, ns) > 0 })
	t.Logf("push+webhook → first pod patched: %s", latency.Round(time.Millisecond))
	waitFor(t, time.Minute, "6 pods on shop:1.1", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.1", 6) })
	maxUnavailable, nUIDs, deleted, _ := fw.summary()
	if maxUnavailable > 2 || nUIDs != 6 || len(deleted) > 0 {
		t.Errorf("in-place rollout: most unavailable %d (bound 2), %d UIDs, deleted %v", maxUnavailable, nUIDs, deleted)
	}
	after := waitReadyPods(t, ns, 6, nil)
	if fmt.Sprint(uidsOf(after)) != fmt.Sprint(uidsOf(before)) {
		t.Errorf("pods replaced: %v → %v", uidsOf(before), uidsOf(after))
	}

	// Drift: a hand edit is put back at the drift interval.
	_, err := bed.Client.CoreV1().ConfigMaps(ns).Patch(context.Background(), "shop-settings", "application/merge-patch+json",
		[]byte(`{"data":{"mode":"slow"}}`), metav1.PatchOptions{FieldManager: "kubectl-edit"})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the ConfigMap put back", func(ctx context.Context) bool {
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, "shop-settings", metav1.GetOptions{})
		return err == nil && cm.Data["mode"] == "fast"
	})

	// A broken commit: reported, nothing changes, the service keeps going.
	broken := appFiles(ns, "shop:1.2", 6)
	broken["deploy/app.yaml"] += "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\n"
	repo.Commit(broken, "broken")
	sendGiteaHook(t, svc.addr, "shop", hookSecret, repo.HTTPURL())
	waitFor(t, 30*time.Second, "a bad-commit reconcile in the metrics", func(context.Context) bool {
		return strings.Contains(svc.metrics(t), appSeries("refit_reconciles_total", "shop", "bad-commit"))
	})
	time.Sleep(2 * time.Second)
	if !allPodsOn(context.Background(), ns, "shop:1.1", 6) {
		t.Errorf("a broken commit changed the pods")
	}
	if !strings.Contains(svc.metrics(t), appSeries("refit_inplace_pods_updated_total", "shop", "")+" 6") {
		t.Errorf("metrics lack the in-place pods:\n%s", grepLines(svc.metrics(t), "refit_"))
	}
	// The fix arrives: applied in place.
	repo.Commit(appFiles(ns, "shop:1.2", 6), "shop 1.2")
	sendGiteaHook(t, svc.addr, "shop", hookSecret, repo.HTTPURL())
	waitFor(t, time.Minute, "6 pods on shop:1.2", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.2", 6) })
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "v")
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// appSeries is the series of a config-file app's metric, with its result
// label unless result is empty: refit labels a Config entry with its own
// namespace.
func appSeries(metric, app, result string) string {
	s := fmt.Sprintf("%s{app=%q,name=%q,namespace=%q", metric, app, app, refitNamespace)
	if result != "" {
		s += fmt.Sprintf(",result=%q", result)
	}
	return s + "}"
}

// sendGiteaHook posts a push event signed as Gitea signs it.
func sendGiteaHook(t *testing.T, addr, app, secret, repoURL string) {
	t.Helper()
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q,"html_url":%q}}`, repoURL, strings.TrimSuffix(repoURL, ".git")))
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hook/"+app, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitea-Event", "push")
	req.Header.Set("X-Gitea-Delivery", fmt.Sprint(time.Now().UnixNano()))
	req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("webhook: %s: %s", resp.Status, b)
	}
}

// tcpProxy forwards a loopback port to a target; Close and Reopen simulate a
// Git host that goes away and comes back on the same address.
type tcpProxy struct {
	addr, target string
	mu           sync.Mutex
	l            net.Listener
	conns        []net.Conn
}

func newProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{addr: freeAddr(t), target: target}
	p.Reopen(t)
	t.Cleanup(p.Close)
	return p
}

func (p *tcpProxy) Reopen(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
}

func (p *tcpProxy) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// A Git host that goes away: polls fail and back off, nothing changes in
// the cluster; when it comes back, the next commit is applied.
func TestRunSurvivesAGitHostOutage(t *testing.T) {
	ns := namespace(t)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "outage")
	repo.Commit(appFiles(ns, "shop:1.0", 2), "1.0")
	u := strings.TrimPrefix(repo.HTTPURL(), "http://")
	host := u[:strings.Index(u, "/")]
	proxy := newProxy(t, host)
	url := "http://" + proxy.addr + u[strings.Index(u, "/"):]

	svc := startService(t, []string{"REFIT_GIT_PASSWORD=" + srv.Password()}, "--repo", url, "--username", srv.Username(),
		"--path", "deploy", "--interval", "1s", "--app", "outage", "-n", ns, "--grace", "0s")
	waitFor(t, time.Minute, "2 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 2) })

	proxy.Close()
	waitFor(t, 30*time.Second, "failed polls in the metrics", func(context.Context) bool {
		return strings.Contains(svc.metrics(t), appSeries("refit_reconciles_total", "outage", "poll-error"))
	})
	repo.Commit(appFiles(ns, "shop:1.1", 2), "1.1 while the host is away")
	time.Sleep(2 * time.Second)
	if !allPodsOn(context.Background(), ns, "shop:1.0", 2) {
		t.Fatal("pods changed while the Git host was away")
	}
	proxy.Reopen(t)
	waitFor(t, time.Minute, "2 pods on shop:1.1 once the host is back", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.1", 2) })
	if svc.cmd.ProcessState != nil {
		t.Fatalf("refit run exited: %s", svc.out.String())
	}
}

// Two refit processes with leader election: only the leader acts; killed
// mid-rollout, the other takes over and finishes the rollout in place.
func TestRunLeaderElectionHandsOverMidRollout(t *testing.T) {
	ns := namespace(t)
	if _, err := bed.Client.CoreV1().Namespaces().Get(context.Background(), "refit-system", metav1.GetOptions{}); err != nil {
		_, _ = bed.Client.CoreV1().Namespaces().Create(context.Background(),
			&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "refit-system"}}, metav1.CreateOptions{})
	}
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "ha")
	repo.Commit(appFiles(ns, "shop:1.0", 12), "1.0")
	args := func(id string) []string {
		return []string{"--repo", repo.HTTPURL(), "--username", srv.Username(), "--path", "deploy", "--interval", "1s",
			"--app", "ha", "-n", ns, "--grace", "0s", "--leader-elect", "--identity", id, "--leader-election-namespace", "refit-system"}
	}
	env := []string{"REFIT_GIT_PASSWORD=" + srv.Password()}
	a := startService(t, env, args("refit-a")...)
	waitFor(t, time.Minute, "12 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 12) })
	b := startService(t, env, args("refit-b")...)
	time.Sleep(2 * time.Second)
	if strings.Contains(b.out.String(), `msg=leading`) {
		t.Fatalf("both processes lead:\n%s", b.out.String())
	}

	fw := watchFleet(t, ns)
	repo.Commit(appFiles(ns, "shop:1.1", 12), "1.1")
	waitFor(t, 30*time.Second, "the first batch patched", func(ctx context.Context) bool { return podsPatched(ctx, ns) >= 2 })
	a.stop(syscall.SIGKILL)
	// The Lease of a killed leader expires (15 s) before b takes over.
	waitFor(t, 90*time.Second, "12 pods on shop:1.1 finished by the new leader", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.1", 12) })
	if !strings.Contains(b.out.String(), "msg=leading") {
		t.Errorf("refit-b never led:\n%s", b.out.String())
	}
	maxUnavailable, nUIDs, deleted, _ := fw.summary()
	if maxUnavailable > 2 || nUIDs != 12 || len(deleted) > 0 {
		t.Errorf("handover: most unavailable %d (bound 2), %d UIDs, deleted %v", maxUnavailable, nUIDs, deleted)
	}
}

// A newer commit during an in-place rollout re-targets it: the Pods not yet
// updated go straight to the newest images, never more than maxUnavailable
// down, none recreated.
func TestRunNewerCommitRetargetsARollout(t *testing.T) {
	ns := namespace(t)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "retarget")
	repo.Commit(appFiles(ns, "shop:1.0", 12), "1.0")
	hook := writeTemp(t, "retarget-secret-0123456789")
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: retarget
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: deploy
  interval: 1m
  namespace: %s
  webhook: {provider: gitea, secretFile: %s}
`, repo.HTTPURL(), writeTemp(t, srv.Username()), writeTemp(t, srv.Password()), ns, hook)
	svc := startService(t, nil, "--config", writeTemp(t, cfg), "--grace", "0s")
	waitFor(t, time.Minute, "12 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 12) })
	before := waitReadyPods(t, ns, 12, nil)

	fw := watchFleet(t, ns)
	repo.Commit(appFiles(ns, "shop:1.1", 12), "1.1")
	sendGiteaHook(t, svc.addr, "retarget", "retarget-secret-0123456789", repo.HTTPURL())
	waitFor(t, 30*time.Second, "the first batch on its way to 1.1", func(ctx context.Context) bool { return podsPatched(ctx, ns) >= 2 })
	repo.Commit(appFiles(ns, "shop:1.2", 12), "1.2")
	sendGiteaHook(t, svc.addr, "retarget", "retarget-secret-0123456789", repo.HTTPURL())
	waitFor(t, 2*time.Minute, "12 pods on shop:1.2", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.2", 12) })
	maxUnavailable, nUIDs, deleted, _ := fw.summary()
	if maxUnavailable > 2 || nUIDs != 12 || len(deleted) > 0 {
		t.Errorf("re-targeted rollout: most unavailable %d (bound 2), %d UIDs, deleted %v", maxUnavailable, nUIDs, deleted)
	}
	after := waitReadyPods(t, ns, 12, nil)
	once := 0
	for _, p := range after {
		if uidsOf(before)[p.Name] != p.UID {
			t.Errorf("pod %s replaced", p.Name)
		}
		if containerStatus(&p, "shop").RestartCount == 1 {
			once++ // went from 1.0 straight to 1.2
		}
	}
	if once == 0 {
		t.Errorf("every pod ran 1.1 first: the newer commit did not re-target the rollout")
	}
	if !strings.Contains(svc.out.String(), "re-targeting") {
		t.Errorf("no re-targeting in the log")
	}
}

// A flood of webhooks for one push is one poll and one reconciliation; the
// service keeps answering.
func TestRunWebhookFloodIsOneReconciliation(t *testing.T) {
	ns := namespace(t)
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "flood")
	repo.Commit(appFiles(ns, "shop:1.0", 2), "1.0")
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: flood
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: deploy
  interval: 10m
  namespace: %s
  webhook: {provider: gitea, secretFile: %s}
`, repo.HTTPURL(), writeTemp(t, srv.Username()), writeTemp(t, srv.Password()), ns, writeTemp(t, "flood-secret-0123456789"))
	svc := startService(t, nil, "--config", writeTemp(t, cfg), "--grace", "0s")
	waitFor(t, time.Minute, "2 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 2) })
	successes := func() string {
		return grepLines(svc.metrics(t), appSeries("refit_reconciles_total", "flood", "success"))
	}
	waitFor(t, time.Minute, "the first deploy reported a success", func(context.Context) bool { return strings.HasSuffix(successes(), " 1") })
	repo.Commit(appFiles(ns, "shop:1.1", 2), "1.1")
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sendGiteaHook(t, svc.addr, "flood", "flood-secret-0123456789", repo.HTTPURL())
		}()
	}
	wg.Wait()
	waitFor(t, time.Minute, "2 pods on shop:1.1", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.1", 2) })
	waitFor(t, time.Minute, "the push reconciled", func(context.Context) bool { return !strings.HasSuffix(successes(), " 1") })
	time.Sleep(2 * time.Second)
	if got := successes(); !strings.HasSuffix(got, " 2") {
		t.Errorf("200 hooks for one push: %q, want exactly one more reconciliation (2 in all)", got)
	}
}
