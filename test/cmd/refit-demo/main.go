// Command refit-demo shows refit's main job on a machine with nothing but
// Go: it starts the local cluster and a local Gitea, commits an app, runs
// `refit run`, then commits an image bump and shows the Pods restarting in
// place (same names and UIDs, restart count 1, batches bounded by
// maxUnavailable) and the commit status refit reports. It stops everything it
// started before it exits. `make demo` runs it. refit's live view is at the
// address it prints: open it before the push to watch the Pods change.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/gitea"
)

const (
	ns       = "shop"
	replicas = 8
	bound    = 2
)

func main() {
	var o demoOptions
	flag.StringVar(&o.refit, "refit", "bin/refit", "the refit binary to run")
	flag.DurationVar(&o.pause, "pause", 15*time.Second, "time to open the live view before the image bump is pushed")
	flag.DurationVar(&o.linger, "linger", 10*time.Second, "time to look at the live view after the rollout, before everything stops")
	flag.DurationVar(&o.grace, "grace", 3*time.Second, "refit run --grace: how long each batch drains, so the rollout is slow enough to watch")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("\n\033[1m▶ "+format+"\033[0m\n", args...)
}

func manifests(image string) map[string]string {
	return map[string]string{
		"deploy/kustomization.yaml": "namespace: " + ns + "\nresources: [namespace.yaml, web.yaml]\n",
		"deploy/namespace.yaml":     "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n",
		"deploy/web.yaml": fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: %d
  strategy: {rollingUpdate: {maxUnavailable: %d}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - name: web
        image: %s
`, replicas, bound, image),
	}
}

// demoOptions are the demo's flags.
type demoOptions struct {
	refit  string
	pause  time.Duration
	linger time.Duration
	grace  time.Duration
}

func run(ctx context.Context, o demoOptions) error {
	if _, err := os.Stat(o.refit); err != nil {
		return fmt.Errorf("%s: %w (run make build first)", o.refit, err)
	}
	say("Starting a local Kubernetes cluster (real kube-apiserver, etcd, controller-manager, scheduler; 4 kwok nodes)")
	copts := cluster.DefaultOptions()
	copts.Name, copts.Ephemeral, copts.Log = cluster.EphemeralName("demo"), true, os.Stdout
	copts.RestartDelay = 2 * time.Second
	bed, err := cluster.Start(ctx, copts)
	if err != nil {
		return err
	}
	defer func() {
		say("Stopping everything the demo started")
		_ = bed.Stop(context.Background())
	}()

	say("Starting a local Git host (Gitea) with a repository")
	gopts := gitea.DefaultOptions()
	gopts.Log = os.Stdout
	git, err := gitea.Start(ctx, gopts)
	if err != nil {
		return err
	}
	defer git.Close()
	if err := git.CreateRepo(ctx, "shop"); err != nil {
		return err
	}
	first, err := git.Commit(ctx, "shop", manifests("nginx:1.27"), "shop: web on nginx:1.27")
	if err != nil {
		return err
	}
	fmt.Printf("  pushed %s  web: %d replicas of nginx:1.27, maxUnavailable %d\n", first[:8], replicas, bound)

	addr, svc, err := startRefit(ctx, o, bed, git)
	if err != nil {
		return err
	}
	defer func() { _ = svc.Process.Signal(syscall.SIGTERM); _ = svc.Wait() }()
	if _, err := git.AddWebhook(ctx, "shop", "http://"+addr+"/hook/shop", "demo-hook-secret"); err != nil {
		return err
	}

	say("refit deploys the first commit")
	before, err := waitPods(ctx, bed, "nginx:1.27")
	if err != nil {
		return err
	}
	printPods(before)
	if err := printStatus(ctx, git, first); err != nil {
		return err
	}

	say("Watch it live: open http://%s/ in a browser (pushing the image bump in %s)", addr, o.pause)
	select {
	case <-time.After(o.pause):
	case <-ctx.Done():
		return ctx.Err()
	}

	say("git push: nginx:1.27 → nginx:1.28 (the webhook tells refit at once)")
	watcher, err := watchPods(ctx, bed)
	if err != nil {
		return err
	}
	bump, err := git.Commit(ctx, "shop", manifests("nginx:1.28"), "shop: web on nginx:1.28")
	if err != nil {
		return err
	}
	fmt.Printf("  pushed %s\n", bump[:8])
	after, err := waitPods(ctx, bed, "nginx:1.28")
	if err != nil {
		return err
	}
	maxDown := watcher.stop()
	say("Every Pod was updated in place")
	printPods(after)
	same := 0
	for name, p := range after {
		if b, ok := before[name]; ok && b.UID == p.UID {
			same++
		}
	}
	fmt.Printf("  %d of %d Pods kept their name and UID; at most %d unavailable at once (maxUnavailable %d); nothing was rescheduled\n",
		same, len(after), maxDown, bound)
	if err := printStatus(ctx, git, bump); err != nil {
		return err
	}
	say("The live view at http://%s/ lists the rollout under Last rollouts (stopping in %s)", addr, o.linger)
	select {
	case <-time.After(o.linger):
	case <-ctx.Done():
	}
	return nil
}

// startRefit runs `refit run` against the cluster and the Git host, its log
// lines indented under the demo's.
func startRefit(ctx context.Context, o demoOptions, bed *cluster.Cluster, git *gitea.Server) (string, *exec.Cmd, error) {
	dir, err := os.MkdirTemp("", "refit-demo")
	if err != nil {
		return "", nil, err
	}
	files := map[string]string{"token": git.Token(), "user": git.Admin(), "hook": "demo-hook-secret"}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0o600); err != nil {
			return "", nil, err
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: shop
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: deploy
  interval: 1m
  status: {provider: gitea, apiURL: %s, tokenFile: %s}
  webhook: {provider: gitea, secretFile: %s}
`, git.RepoURL("shop"), filepath.Join(dir, "user"), filepath.Join(dir, "token"), git.URL, filepath.Join(dir, "token"), filepath.Join(dir, "hook"))
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o644); err != nil {
		return "", nil, err
	}
	say("Starting refit run (polls every minute; webhooks at http://%s/hook/shop; the live view at http://%s/)", addr, addr)
	cmd := exec.CommandContext(ctx, o.refit, "run", "--config", filepath.Join(dir, "config.yaml"), "--kubeconfig", bed.Kubeconfig,
		"--listen", addr, "--cache-dir", filepath.Join(dir, "cache"), "--grace", o.grace.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			fmt.Printf("  \033[2mrefit │ %s\033[0m\n", shorten(sc.Text()))
		}
	}()
	return addr, cmd, nil
}

// shorten drops the timestamp of a log line.
func shorten(line string) string {
	if strings.HasPrefix(line, "time=") {
		if i := strings.Index(line, " "); i > 0 {
			return line[i+1:]
		}
	}
	return line
}

func waitPods(ctx context.Context, bed *cluster.Cluster, image string) (map[string]corev1.Pod, error) {
	var pods map[string]corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		pods = map[string]corev1.Pod{}
		for _, p := range list.Items {
			pods[p.Name] = p
			if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].Image != image || !ready(&p) {
				return false, nil
			}
		}
		return len(pods) == replicas, nil
	})
	if err != nil {
		return nil, fmt.Errorf("pods of web did not all run %s: %w", image, err)
	}
	return pods, nil
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func printPods(pods map[string]corev1.Pod) {
	names := make([]string, 0, len(pods))
	for n := range pods {
		names = append(names, n)
	}
	sort.Strings(names)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  POD\tUID\tNODE\tIP\tIMAGE\tRESTARTS\tREADY")
	for _, n := range names {
		p := pods[n]
		cs := p.Status.ContainerStatuses[0]
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%d\t%v\n", p.Name, string(p.UID)[:8], p.Spec.NodeName, p.Status.PodIP, cs.Image, cs.RestartCount, ready(&p))
	}
	tw.Flush()
}

func printStatus(ctx context.Context, git *gitea.Server, sha string) error {
	var last gitea.CommitStatus
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		sts, err := git.Statuses(ctx, "shop", sha)
		if err != nil {
			return false, nil
		}
		for _, s := range sts {
			if s.Context == "refit/shop" && s.ID > last.ID {
				last = s
			}
		}
		return last.State == "success" || last.State == "failure", nil
	})
	if err != nil {
		return errors.New("no final commit status from refit")
	}
	fmt.Printf("  commit status on %s in Gitea: %s: %s (%s)\n", sha[:8], last.Context, last.State, last.Description)
	return nil
}

// podWatch prints each Pod's transitions and tracks the most unavailable.
type podWatch struct {
	w     watch.Interface
	done  chan struct{}
	maxDn int
}

func watchPods(ctx context.Context, bed *cluster.Cluster) (*podWatch, error) {
	list, err := bed.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	state := map[string]string{}
	readyNow := map[string]bool{}
	for _, p := range list.Items {
		state[p.Name], readyNow[p.Name] = describe(&p), ready(&p)
	}
	w, err := bed.Client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		return nil, err
	}
	pw := &podWatch{w: w, done: make(chan struct{})}
	go func() {
		defer close(pw.done)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			readyNow[p.Name] = ready(p) && ev.Type != watch.Deleted
			down := 0
			for _, r := range readyNow {
				if !r {
					down++
				}
			}
			pw.maxDn = max(pw.maxDn, down)
			if d := describe(p); d != state[p.Name] {
				state[p.Name] = d
				fmt.Printf("  %s  %-44s  unavailable now: %d/%d\n", time.Now().Format("15:04:05.0"), p.Name+" "+d, down, bound)
			}
		}
	}()
	return pw, nil
}

func (pw *podWatch) stop() int {
	pw.w.Stop()
	<-pw.done
	return pw.maxDn
}

func describe(p *corev1.Pod) string {
	if len(p.Status.ContainerStatuses) == 0 {
		return string(p.Status.Phase)
	}
	cs := p.Status.ContainerStatuses[0]
	switch {
	case cs.State.Waiting != nil:
		return "restarting (" + cs.State.Waiting.Reason + ")"
	case !ready(p):
		return fmt.Sprintf("%s, not ready", cs.Image)
	default:
		return fmt.Sprintf("%s, restarts %d, ready", cs.Image, cs.RestartCount)
	}
}
