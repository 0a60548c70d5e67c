//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/apply"
	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/toolcache"
)

// TestApplyVersusKubectl applies the same tree of 1,000 objects (ConfigMaps
// and one-replica Deployments) with refit (plan: server-side dry-run per
// object; apply: server-side apply of what changed, inventory) and with
// kubectl apply --server-side, on one cluster in one run, first into an
// empty namespace and then again unchanged. Requests are counted on the
// client side: refit's through rest.Config.WrapTransport, kubectl's from its
// -v=6 log (one "Response" line per request).
func TestApplyVersusKubectl(t *testing.T) {
	objects := 1000
	if s := os.Getenv("BENCH_OBJECTS"); s != "" {
		objects, _ = strconv.Atoi(s)
	}
	deployments := objects / 4
	ctx := context.Background()
	opts := cluster.DefaultOptions()
	opts.Name = cluster.EphemeralName("bench-apply")
	opts.Ephemeral = true
	opts.Log = os.Stderr
	// Room for both namespaces' Pods.
	opts.PodsPerNode = 3*deployments/opts.Nodes + 20
	bed, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bed.Stop(context.Background()) }()

	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	docs := writeApplyTree(t, tree, objects-deployments, deployments)
	kubectl := bed.Tools.Kubectl
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("kubectl: %v", err)
	}
	// refit with the CLI's default rate limit (--qps 100 --burst 200), and
	// with a higher one to show what the limit costs.
	variants := []refitVariant{{"bench-refit", 100, 200}, {"bench-refit-fast", 1000, 2000}}
	for _, ns := range []string{"bench-kubectl", variants[0].namespace, variants[1].namespace} {
		if _, err := bed.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	var rows []applyRow
	for _, run := range []string{"first apply", "unchanged"} {
		// One after the other, each once the Pods of the previous one are
		// up, so that neither pays for the other's rollouts.
		rows = append(rows, runKubectl(t, bed, kubectl, filepath.Join(dir, "kubectl-cache"), tree, run))
		settleDeployments(t, bed, "bench-kubectl", deployments)
		for _, v := range variants {
			rows = append(rows, runRefit(t, bed, docs, run, v))
			settleDeployments(t, bed, v.namespace, deployments)
		}
	}

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%d objects (%d ConfigMaps, %d Deployments)\trun\ttool\twall\trequests\treads\tdry-runs\twrites\t\n", objects, objects-deployments, deployments)
	for _, r := range rows {
		fmt.Fprintf(tw, "\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t\n", r.run, r.tool, r.wall.Round(10*time.Millisecond), r.total(), r.reads, r.dryRuns, r.writes)
	}
	tw.Flush()
	per := 1 + len(variants)
	for i := 0; i+per-1 < len(rows); i += per {
		k := rows[i]
		for _, r := range rows[i+1 : i+per] {
			fmt.Printf("%s, %s: refit/kubectl wall %.2f, requests %.2f, writes %.2f (plan %s, %d requests; apply %s, %d requests)\n",
				k.run, r.tool, r.wall.Seconds()/k.wall.Seconds(), float64(r.total())/float64(k.total()), float64(r.writes)/float64(max(k.writes, 1)),
				r.planWall.Round(10*time.Millisecond), r.planRequests, (r.wall - r.planWall).Round(10*time.Millisecond), r.total()-r.planRequests)
		}
	}
	fmt.Println("command: go test -tags bench -count=1 -timeout 30m -run ApplyVersusKubectl -v ./test/bench/")
}

type applyRow struct {
	run, tool              string
	wall, planWall         time.Duration
	reads, dryRuns, writes int64
	planRequests           int64
}

func (r applyRow) total() int64 { return r.reads + r.dryRuns + r.writes }

// writeApplyTree writes the manifests kubectl reads and returns the same
// objects for refit.
func writeApplyTree(t *testing.T, dir string, configMaps, deployments int) []diff.Desired {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var cms, deps []string
	for i := 0; i < configMaps; i++ {
		cms = append(cms, fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings-%04d\n  labels: {app: bench}\ndata:\n  mode: fast\n  index: %q\n", i, strconv.Itoa(i)))
	}
	for i := 0; i < deployments; i++ {
		deps = append(deps, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web-%04d
spec:
  replicas: 1
  selector: {matchLabels: {app: web-%04d}}
  template:
    metadata: {labels: {app: web-%04d}}
    spec:
      containers:
      - name: main
        image: nginx:1.27
        resources: {requests: {cpu: 1m, memory: 4Mi}}
`, i, i, i))
	}
	var out []diff.Desired
	for file, list := range map[string][]string{"configmaps.yaml": cms, "deployments.yaml": deps} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(strings.Join(list, "---\n")), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, doc := range list {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
				t.Fatal(err)
			}
			out = append(out, diff.Desired{Object: obj, Source: file})
		}
	}
	return out
}

// kubectlResponse is client-go's -v=6 line for one request.
var kubectlResponse = regexp.MustCompile(`"Response" verb="([A-Z]+)" url="([^"]*)"`)

func runKubectl(t *testing.T, bed *cluster.Cluster, kubectl, cacheDir, tree, run string) applyRow {
	t.Helper()
	cmd := exec.Command(kubectl, "--kubeconfig", bed.Kubeconfig, "--cache-dir", cacheDir,
		"apply", "--server-side", "--field-manager", "kubectl-bench", "-n", "bench-kubectl", "-f", tree, "-v=6")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, toolcache.LastLines(stderr.String(), 20))
	}
	row := applyRow{run: run, tool: "kubectl apply --server-side", wall: time.Since(start)}
	sc := bufio.NewScanner(&stderr)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := kubectlResponse.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		countRequest(&row, m[1], strings.Contains(m[2], "dryRun="))
	}
	if row.total() == 0 {
		t.Fatalf("no request lines in kubectl's -v=6 log:\n%s", toolcache.LastLines(stderr.String(), 20))
	}
	return row
}

func countRequest(row *applyRow, method string, dryRun bool) {
	switch {
	case method == http.MethodGet:
		atomic.AddInt64(&row.reads, 1)
	case dryRun:
		atomic.AddInt64(&row.dryRuns, 1)
	default:
		atomic.AddInt64(&row.writes, 1)
	}
}

type countingTransport struct {
	rt  http.RoundTripper
	row *applyRow
}

func (c countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	countRequest(c.row, req.Method, req.URL.Query().Has("dryRun"))
	return c.rt.RoundTrip(req)
}

type refitVariant struct {
	namespace string
	qps       float32
	burst     int
}

// runRefit plans and applies as `refit apply` does, with a fresh planner and
// applier as a new process would have.
func runRefit(t *testing.T, bed *cluster.Cluster, docs []diff.Desired, run string, v refitVariant) applyRow {
	t.Helper()
	ctx := context.Background()
	row := applyRow{run: run, tool: fmt.Sprintf("refit plan + apply, qps %g", v.qps)}
	cfg := rest.CopyConfig(bed.Config)
	cfg.QPS, cfg.Burst = v.qps, v.burst
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return countingTransport{rt: rt, row: &row} }
	start := time.Now()
	planner, err := diff.NewPlanner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	applier, err := apply.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	popts := diff.DefaultOptions()
	popts.Namespace = v.namespace
	if popts.Previous, err = applier.Inventory(ctx, v.namespace); err != nil {
		t.Fatal(err)
	}
	plan, err := planner.Plan(ctx, docs, popts)
	if err != nil {
		t.Fatal(err)
	}
	row.planWall, row.planRequests = time.Since(start), row.total()
	aopts := apply.DefaultOptions()
	aopts.App = v.namespace
	res, err := applier.Apply(ctx, plan, aopts)
	if err != nil {
		t.Fatal(err)
	}
	row.wall = time.Since(start)
	t.Logf("refit %s: %s", run, res.Summary())
	return row
}

// settleDeployments waits until the n Deployments of ns have their Pod.
func settleDeployments(t *testing.T, bed *cluster.Cluster, ns string, n int) {
	t.Helper()
	ready := 0
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := bed.Client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready = 0
		for _, d := range list.Items {
			if d.Status.AvailableReplicas == 1 && d.Status.ObservedGeneration == d.Generation {
				ready++
			}
		}
		return ready == n, nil
	})
	if err != nil {
		t.Fatalf("%s: %d of %d Deployments available after 5m", ns, ready, n)
	}
}
