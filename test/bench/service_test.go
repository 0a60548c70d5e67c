//go:build bench

package bench

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
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/gitserver"
)

const serviceApps = 10

func appManifest(ns, image string) map[string]string {
	return map[string]string{
		"app/kustomization.yaml": "namespace: " + ns + "\nresources: [ns.yaml, app.yaml]\n",
		"app/ns.yaml":            "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n",
		"app/app.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  strategy: {rollingUpdate: {maxUnavailable: 1}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: %q}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {a: "1"}
`, image),
	}
}

// TestServiceFigures measures refit run with 10 apps: CPU and memory while
// idle, the duration of a reconciliation that finds nothing to change, and
// git push → first Pod patched with a webhook and with polling.
func TestServiceFigures(t *testing.T) {
	ctx := context.Background()
	opts := cluster.DefaultOptions()
	opts.Name, opts.Ephemeral, opts.Log = cluster.EphemeralName("svc"), true, os.Stderr
	bed, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bed.Stop(context.Background()) }()

	bin := filepath.Join(t.TempDir(), "refit")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/refit-gitops/refit/cmd/refit").CombinedOutput(); err != nil {
		t.Fatalf("build: %s", out)
	}
	srv := gitserver.New(t, gitserver.DefaultOptions())
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	user, pass, hook := write("user", srv.Username()), write("pass", srv.Password()), write("hook", "bench-secret-0123456789")
	var cfg strings.Builder
	cfg.WriteString("apiVersion: refit.dev/v1alpha1\nkind: Config\napps:\n")
	repos := make([]*gitserver.TestRepo, serviceApps)
	for i := range repos {
		repos[i] = srv.NewRepo(t, fmt.Sprintf("app%d", i))
		repos[i].Commit(appManifest(fmt.Sprintf("app%d", i), "web:1.0"), "v1")
		fmt.Fprintf(&cfg, `- name: app%d
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: app
  interval: 10s
  driftInterval: 20s
  webhook: {provider: gitea, secretFile: %s}
`, i, repos[i].HTTPURL(), user, pass, hook)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "run", "--config", write("config.yaml", cfg.String()), "--kubeconfig", bed.Kubeconfig,
		"--listen", addr, "--cache-dir", filepath.Join(dir, "cache"), "--grace", "0s")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	for i := range repos {
		waitPodsOn(t, bed, fmt.Sprintf("app%d", i), "web:1.0")
	}
	// Idle: the apps are in sync; refit polls every 10 s and compares with
	// the cluster every 20 s.
	cpu0, wall0 := cpuSeconds(t, cmd.Process.Pid), time.Now()
	time.Sleep(60 * time.Second)
	cpu := (cpuSeconds(t, cmd.Process.Pid) - cpu0) / time.Since(wall0).Seconds()
	rss := rssMiB(t, cmd.Process.Pid)
	sum, count := histogram(t, addr, "refit_reconcile_duration_seconds")

	webhook := pushToPatched(t, bed, repos[0], "app0", "web:1.1", func() { sendHook(t, addr, "app0", repos[0].HTTPURL()) })
	polling := pushToPatched(t, bed, repos[1], "app1", "web:1.1", func() {})

	fmt.Printf("refit run, %d apps, idle for 60 s: CPU %.1f%% of one core, RSS %.0f MiB\n", serviceApps, cpu*100, rss)
	fmt.Printf("reconciliation with nothing to change (render + plan + apply check): mean %.0f ms over %d runs\n", sum/count*1000, int(count))
	fmt.Printf("git push → first Pod patched: %s with a webhook, %s by polling (interval 10 s)\n",
		webhook.Round(time.Millisecond), polling.Round(time.Millisecond))
	fmt.Println("command: go test -tags bench -count=1 -run ServiceFigures -v ./test/bench/")
}

func waitPodsOn(t *testing.T, bed *cluster.Cluster, ns, image string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		for _, p := range pods.Items {
			if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].Image != image || !podReady(&p) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("%s: pods not on %s", ns, image)
	}
}

// pushToPatched commits an image bump, calls after (a webhook, or
// nothing), and times until the first Pod carries refit's patch.
func pushToPatched(t *testing.T, bed *cluster.Cluster, repo *gitserver.TestRepo, ns, image string, after func()) time.Duration {
	t.Helper()
	start := time.Now()
	repo.Commit(appManifest(ns, image), "bump")
	after()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		for _, p := range pods.Items {
			if _, ok := p.Annotations[inplace.StateAnnotation]; ok {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("%s: no pod patched", ns)
	}
	return time.Since(start)
}

func sendHook(t *testing.T, addr, app, repoURL string) {
	body := []byte(fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, repoURL))
	mac := hmac.New(sha256.New, []byte("bench-secret-0123456789"))
	mac.Write(body)
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/hook/"+app, bytes.NewReader(body))
	req.Header.Set("X-Gitea-Event", "push")
	req.Header.Set("X-Gitea-Delivery", strconv.FormatInt(time.Now().UnixNano(), 10))
	req.Header.Set("X-Gitea-Signature", hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
}

func cpuSeconds(t *testing.T, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndex(string(data), ")")+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}

func rssMiB(t *testing.T, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// histogram sums a histogram's _sum and _count over all label sets.
func histogram(t *testing.T, addr, name string) (sum, count float64) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		v, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		switch {
		case err != nil:
		case strings.HasPrefix(line, name+"_sum"):
			sum += v
		case strings.HasPrefix(line, name+"_count"):
			count += v
		}
	}
	return sum, count
}
