//go:build bench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/gitserver"
)

// appsNS holds every App and the one Secret with their Git credentials: the
// shape of a platform team's namespace of Apps (Secrets are looked up in
// the App's own namespace).
const appsNS = "apps"

var (
	appsResource = v1alpha1.GroupVersion.WithResource("apps")
	crdResource  = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
)

// benchApps is one monorepo app: a Namespace, a Deployment scaled to 0, a
// ServiceAccount, a Service and a ConfigMap whose data is version.
func benchApps(files map[string]string, i, version int) {
	ns := fmt.Sprintf("bench-%04d", i)
	dir := fmt.Sprintf("apps/app%04d", i)
	files[dir+"/kustomization.yaml"] = "namespace: " + ns + "\nresources: [ns.yaml, app.yaml, svc.yaml]\n"
	files[dir+"/ns.yaml"] = "apiVersion: v1\nkind: Namespace\nmetadata: {name: " + ns + "}\n"
	files[dir+"/svc.yaml"] = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n"
	files[dir+"/app.yaml"] = fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web
      containers: [{name: web, image: "web:1.0"}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: web}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {version: "%d"}
`, version)
}

func appName(i int) string { return fmt.Sprintf("app%04d", i) }

// benchSizes reads a comma-separated list of app counts from env.
func benchSizes(t *testing.T, env string, def []int) []int {
	v := os.Getenv(env)
	if v == "" {
		return def
	}
	var ns []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("%s: %v", env, err)
		}
		ns = append(ns, n)
	}
	return ns
}

func sizesFlag(ns []int) string {
	return strings.Trim(strings.Join(strings.Fields(fmt.Sprint(ns)), ","), "[]")
}

func buildRefit(t *testing.T) string {
	bin := filepath.Join(t.TempDir(), "refit")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/refit-gitops/refit/cmd/refit").CombinedOutput(); err != nil {
		t.Fatalf("build: %s", out)
	}
	return bin
}

// appsBed is a local cluster of its own with the App CRD installed, the
// namespace of the Apps and their Git Secret, and a client allowed to
// create a thousand Apps quickly.
type appsBed struct {
	*cluster.Cluster
	dyn dynamic.Interface
}

func startAppsBed(t *testing.T, prefix string, srv *gitserver.Server) *appsBed {
	t.Helper()
	ctx := context.Background()
	opts := cluster.DefaultOptions()
	// No Pod runs (every Deployment is scaled to 0): one node is enough.
	opts.Ephemeral, opts.Log, opts.Nodes = true, io.Discard, 1
	var bed *cluster.Cluster
	var err error
	for try := 0; try < 3; try++ { // on a loaded machine a start can time out
		opts.Name = cluster.EphemeralName(prefix)
		if bed, err = cluster.Start(ctx, opts); err == nil {
			break
		}
		t.Logf("cluster start: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bed.Stop(context.Background()) })
	cfg := rest.CopyConfig(bed.Config)
	cfg.QPS, cfg.Burst = 500, 1000 // the bench's own set-up is not what is measured
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b := &appsBed{Cluster: bed, dyn: dyn}
	b.installCRD(t)
	for _, ns := range []string{appsNS, "refit-system"} {
		if _, err := bed.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bed.Client.CoreV1().Secrets(appsNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "git"},
		StringData: map[string]string{"username": srv.Username(), "password": srv.Password()},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// installCRD applies deploy/crds as `kubectl apply --server-side -k` would
// (the kustomization lists this one file) and waits until it is served.
func (b *appsBed) installCRD(t *testing.T) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "crds", "refit.dev_apps.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	force := true
	if _, err := b.dyn.Resource(crdResource).Patch(ctx, "apps.refit.dev", types.ApplyPatchType, js,
		metav1.PatchOptions{FieldManager: "bench", Force: &force}); err != nil {
		t.Fatalf("install the App CRD: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := b.dyn.Resource(appsResource).Namespace("default").List(ctx, metav1.ListOptions{Limit: 1})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("App CRD not served after a minute: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// createApps creates n Apps in appsNS, app%04d on path apps/app%04d of url.
func (b *appsBed) createApps(t *testing.T, n int, url string) {
	t.Helper()
	apps := b.dyn.Resource(appsResource).Namespace(appsNS)
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": v1alpha1.GroupVersion.String(), "kind": "App",
				"metadata": map[string]any{"name": appName(i), "namespace": appsNS},
				"spec": map[string]any{
					"source":        map[string]any{"url": url, "secretRef": map[string]any{"name": "git"}},
					"path":          "apps/" + appName(i),
					"interval":      "5s",
					"driftInterval": "1h",
				},
			}}
			_, err := apps.Create(context.Background(), u, metav1.CreateOptions{})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatalf("create App: %v", err)
		}
	}
}

// appWatch follows the Apps of appsNS from a watch (one list, then events:
// the bench adds two requests to what it measures, not one per poll).
type appWatch struct {
	w    *watchtools.RetryWatcher
	done chan struct{}

	mu      sync.Mutex
	applied map[string]string // App name: lastAppliedRevision while Ready=True
	changed chan struct{}     // closed and replaced on every event
}

func (b *appsBed) watchApps(t *testing.T) *appWatch {
	t.Helper()
	apps := b.dyn.Resource(appsResource).Namespace(appsNS)
	list, err := apps.List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list Apps: %v", err)
	}
	w, err := watchtools.NewRetryWatcherWithContext(context.Background(), list.GetResourceVersion(), &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return apps.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatalf("watch Apps: %v", err)
	}
	aw := &appWatch{w: w, done: make(chan struct{}), applied: map[string]string{}, changed: make(chan struct{})}
	for i := range list.Items {
		aw.observe(&list.Items[i])
	}
	go aw.follow()
	t.Cleanup(func() { w.Stop(); <-aw.done })
	return aw
}

func (aw *appWatch) follow() {
	defer close(aw.done)
	for ev := range aw.w.ResultChan() {
		if u, ok := ev.Object.(*unstructured.Unstructured); ok && ev.Type != watch.Deleted {
			aw.observe(u)
		}
	}
}

func (aw *appWatch) observe(u *unstructured.Unstructured) {
	var app v1alpha1.App
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &app); err != nil {
		return
	}
	rev := ""
	if apimeta.IsStatusConditionTrue(app.Status.Conditions, "Ready") {
		rev = app.Status.LastAppliedRevision
	}
	aw.mu.Lock()
	defer aw.mu.Unlock()
	aw.applied[app.Name] = rev
	close(aw.changed)
	aw.changed = make(chan struct{})
}

// readyAt counts the Apps Ready with sha applied.
func (aw *appWatch) readyAt(sha string) int {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	n := 0
	for _, rev := range aw.applied {
		if strings.HasSuffix(rev, "@sha1:"+sha) {
			n++
		}
	}
	return n
}

func (aw *appWatch) isReadyAt(name, sha string) bool {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	return strings.HasSuffix(aw.applied[name], "@sha1:"+sha)
}

// wait returns the time since from once done holds, checked on every App
// event; it fails the test after timeout, or when no App became Ready at
// sha for stall (a stuck App, not a slow start), naming Apps not Ready.
func (aw *appWatch) wait(t *testing.T, what, sha string, from time.Time, timeout time.Duration, done func() bool) time.Duration {
	t.Helper()
	d, err := aw.await(what, sha, from, timeout, done)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// await is wait returning its failure.
func (aw *appWatch) await(what, sha string, from time.Time, timeout time.Duration, done func() bool) (time.Duration, error) {
	const stall = 5 * time.Minute
	deadline := time.Now().Add(timeout)
	ready, progressed := aw.readyAt(sha), time.Now()
	for {
		aw.mu.Lock()
		changed := aw.changed
		aw.mu.Unlock()
		if done() {
			return time.Since(from), nil
		}
		if r := aw.readyAt(sha); r != ready {
			ready, progressed = r, time.Now()
		}
		if time.Now().After(deadline) || time.Since(progressed) > stall {
			return time.Since(from), fmt.Errorf("%s: not within %s (none more Ready for %s): %d Apps Ready at %s; not: %v",
				what, time.Since(from).Round(time.Second), time.Since(progressed).Round(time.Second), ready, sha[:8], aw.notReadyAt(sha, 10))
		}
		select {
		case <-changed:
		case <-time.After(time.Second):
		}
	}
}

// notReadyAt names up to max Apps not Ready at sha, with their revision.
func (aw *appWatch) notReadyAt(sha string, max int) []string {
	aw.mu.Lock()
	defer aw.mu.Unlock()
	var names []string
	for name, rev := range aw.applied {
		if !strings.HasSuffix(rev, "@sha1:"+sha) {
			names = append(names, name+"="+rev)
		}
	}
	slices.Sort(names)
	return names[:min(len(names), max)]
}

// refitProc is one `refit run` process of the bench.
type refitProc struct {
	cmd  *exec.Cmd
	addr string
	logs *syncBuffer
}

// startRefit starts `refit run` on the bed's App objects with args added.
// Its output goes to $BENCH_LOG.name when set (kept when the test fails),
// and its tail to the test log when the test fails.
func startRefit(t *testing.T, bin string, bed *appsBed, name string, args ...string) *refitProc {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, append([]string{"run", "--kubeconfig", bed.Kubeconfig, "--listen", addr,
		"--cache-dir", t.TempDir(), "--grace", "0s"}, args...)...)
	p := &refitProc{cmd: cmd, addr: addr, logs: &syncBuffer{}}
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.kill()
		if f := os.Getenv("BENCH_LOG"); f != "" {
			_ = os.WriteFile(f+"."+name, []byte(p.logs.String()), 0o644)
		}
		if t.Failed() {
			t.Logf("refit run %s output (tail):\n%s", name, tail(p.logs.String(), 4000))
		}
	})
	return p
}

func (p *refitProc) kill() {
	if p.cmd.ProcessState == nil {
		_ = p.cmd.Process.Kill()
		_ = p.cmd.Wait()
	}
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

var (
	metricLine = regexp.MustCompile(`^refit_reconciles_total\{([^}]*)\} (\S+)$`)
	labelPair  = regexp.MustCompile(`(\w+)="([^"]*)"`)
)

// successes reads refit's count of applied reconciliations per app from
// its metrics (empty when it does not serve yet or is gone).
func (p *refitProc) successes() map[string]int {
	got := map[string]int{}
	resp, err := http.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return got
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		m := metricLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelPair.FindAllStringSubmatch(m[1], -1) {
			labels[l[1]] = l[2]
		}
		if labels["result"] == "success" {
			v, _ := strconv.ParseFloat(m[2], 64)
			got[labels["app"]] += int(v)
		}
	}
	return got
}

// requestCounts is the API server's apiserver_request_total summed by
// "VERB resource[.group][/subresource][ (dry run)]" over codes, scopes and
// versions: every
// client's requests (refit's, the controllers', the bench's few).
type requestCounts map[string]float64

func apiRequests(t *testing.T, bed *appsBed) requestCounts {
	t.Helper()
	raw, err := bed.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("api server metrics: %v", err)
	}
	return parseRequestCounts(string(raw))
}

func parseRequestCounts(text string) requestCounts {
	rc := requestCounts{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		end := strings.LastIndex(line, "}")
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			continue
		}
		labels := map[string]string{}
		for _, l := range labelPair.FindAllStringSubmatch(line[:end], -1) {
			labels[l[1]] = l[2]
		}
		// A non-resource request (/healthz) has its path as subresource.
		res := labels["resource"]
		if labels["group"] != "" {
			res += "." + labels["group"]
		}
		if s := labels["subresource"]; s != "" && res != "" {
			res += "/" + s
		} else if s != "" {
			res = s
		}
		key := labels["verb"] + " " + res
		if labels["dry_run"] != "" {
			key += " (dry run)"
		}
		rc[key] += v
	}
	return rc
}

// since is rc less before, entries that did not grow left out.
func (rc requestCounts) since(before requestCounts) requestCounts {
	d := requestCounts{}
	for k, v := range rc {
		if v-before[k] > 0 {
			d[k] = v - before[k]
		}
	}
	return d
}

func (rc requestCounts) total() int {
	s := 0.0
	for _, v := range rc {
		s += v
	}
	return int(s)
}

// top formats the k largest entries, with their count per app.
func (rc requestCounts) top(k, apps int) string {
	keys := make([]string, 0, len(rc))
	for key := range rc {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if rc[a] != rc[b] {
			if rc[a] > rc[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	var sb strings.Builder
	for i, key := range keys {
		if i == k {
			break
		}
		fmt.Fprintf(&sb, "  %-55s %7d  %5.1f per app\n", key, int(rc[key]), rc[key]/float64(apps))
	}
	return sb.String()
}

// peakRSSMiB is the process's high-water resident set (VmHWM).
func peakRSSMiB(t *testing.T, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(line)[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
