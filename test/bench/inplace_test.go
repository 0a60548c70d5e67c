//go:build bench

// Package bench compares refit's in-place rollout with the same image bump
// done by recreation (the Deployment controller's RollingUpdate), side by
// side on one local cluster with the same simulated container start time.
// Run with `make bench` (or go test -tags bench -run InPlace -v ./test/bench/).
package bench

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
)

// restartDelay is the simulated time a container takes to start, the same
// for a new Pod's container and for an in-place restart.
const restartDelay = 2 * time.Second

type row struct {
	scenario       string
	method         string
	pods           int
	bound          int
	wall           time.Duration
	writesPerPod   float64 // all writes the API server served, per Pod
	refitPerPod    float64 // refit's own writes, per Pod
	everPending    int
	maxUnavailable int
	efficiency     float64
}

func TestInPlaceVersusRecreate(t *testing.T) {
	sizes := []int{100, 500}
	if s := os.Getenv("BENCH_PODS"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, _ := strconv.Atoi(f)
			sizes = append(sizes, n)
		}
	}
	var rows []row
	for _, n := range sizes {
		for _, full := range []bool{false, true} {
			rs := runScenario(t, n, full)
			for _, r := range rs {
				fmt.Printf("%s %s %d pods: %s, %.1f API writes/pod, %d ever Pending, %d most unavailable\n",
					r.scenario, r.method, r.pods, r.wall.Round(10*time.Millisecond), r.writesPerPod, r.everPending, r.maxUnavailable)
			}
			rows = append(rows, rs...)
		}
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tmethod\tpods\tmaxUnavailable\twall\tAPI writes/pod\trefit writes/pod\tever Pending\tmost unavailable\tefficiency\t")
	for _, r := range rows {
		eff := "-"
		if r.efficiency > 0 {
			eff = fmt.Sprintf("%.2f", r.efficiency)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%.1f\t%.1f\t%d\t%d\t%s\t\n", r.scenario, r.method, r.pods, r.bound,
			r.wall.Round(10*time.Millisecond), r.writesPerPod, r.refitPerPod, r.everPending, r.maxUnavailable, eff)
	}
	tw.Flush()
	for i := 0; i+1 < len(rows); i += 2 {
		fmt.Printf("%s, %d pods: in place took %.2fx the wall time of recreation\n", rows[i].scenario, rows[i].pods,
			rows[i].wall.Seconds()/rows[i+1].wall.Seconds())
	}
	fmt.Println("command: make bench  (go test -tags bench -count=1 -timeout 60m -run InPlaceVersusRecreate -v ./test/bench/)")
}

// runScenario starts a cluster sized for n Pods (with room for a surge, or
// full), and runs the same image bump in place and by recreation.
func runScenario(t *testing.T, n int, full bool) []row {
	ctx := context.Background()
	opts := cluster.DefaultOptions()
	opts.Name = cluster.EphemeralName(fmt.Sprintf("bench%d-%v", n, full))
	opts.Ephemeral = true
	opts.Log = os.Stderr
	opts.StartDelay, opts.RestartDelay = restartDelay, restartDelay
	scenario := "room"
	opts.PodsPerNode = int(math.Ceil(float64(n)*1.5/4)) + 5
	if full {
		scenario = "nodes full"
		opts.PodsPerNode = int(math.Ceil(float64(n) / 4))
	}
	bed, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bed.Stop(context.Background()) }()

	bound := n / 4 // 25%, rounded down as the Deployment controller does
	var rows []row
	for _, method := range []string{"in place", "recreate"} {
		r := runOne(t, bed, n, method)
		r.scenario, r.bound = scenario, bound
		lower := math.Ceil(float64(n)/float64(bound)) * restartDelay.Seconds()
		if method == "in place" {
			r.efficiency = lower / r.wall.Seconds()
		}
		rows = append(rows, r)
	}
	return rows
}

func deploymentManifest(name string, n int, image string) *unstructured.Unstructured {
	obj := &unstructured.Unstructured{}
	doc := fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %s, namespace: %s}
spec:
  replicas: %d
  strategy: {rollingUpdate: {maxUnavailable: 25%%}}
  selector: {matchLabels: {app: %s}}
  template:
    metadata: {labels: {app: %s}}
    spec:
      nodeSelector: {refit.dev/node-type: kwok}
      containers:
      - {name: app, image: %q}`, name, name, n, name, name, image)
	if err := yaml.Unmarshal([]byte(doc), &obj.Object); err != nil {
		panic(err)
	}
	return obj
}

func runOne(t *testing.T, bed *cluster.Cluster, n int, method string) row {
	ctx := context.Background()
	name := "inplace"
	if method == "recreate" {
		name = "recreate"
	}
	defer seedDeployment(ctx, t, bed, name, n)()

	fw := watchFleet(t, bed, name, n)
	writesBefore := apiWrites(t, bed)
	start := time.Now()
	var refitWrites int64
	if method == "in place" {
		cfg := rest.CopyConfig(bed.Config)
		cfg.QPS, cfg.Burst = 200, 400
		cfg.WrapTransport = countWrites(&refitWrites)
		planner, err := diff.NewPlanner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		po := diff.DefaultOptions()
		po.Namespace = name
		plan, err := planner.Plan(ctx, []diff.Desired{{Object: deploymentManifest(name, n, "app:1.1")}}, po)
		if err != nil {
			t.Fatal(err)
		}
		engine, err := inplace.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		io := inplace.DefaultOptions()
		res, err := engine.Rollout(ctx, plan.Changes[0], io)
		if err != nil || res.Outcome != inplace.Succeeded {
			t.Fatalf("in-place rollout: %+v %v", res, err)
		}
	} else {
		applyDeployment(ctx, t, bed, deploymentManifest(name, n, "app:1.1"))
		waitDeployment(t, bed, name, n)
	}
	wall := time.Since(start)
	writes := apiWrites(t, bed) - writesBefore
	maxUnavailable, pending := fw.stop()
	return row{method: method, pods: n, wall: wall, writesPerPod: float64(writes) / float64(n),
		refitPerPod: float64(refitWrites) / float64(n), everPending: pending, maxUnavailable: maxUnavailable}
}

// waitDeployment waits until the Deployment's rollout is complete: every
// Pod updated, available, and no old Pod left.
func waitDeployment(t *testing.T, bed *cluster.Cluster, name string, n int) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := bed.Client.AppsV1().Deployments(name).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		s := d.Status
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == int32(n) && s.AvailableReplicas == int32(n) && s.Replicas == int32(n), nil
	})
	if err != nil {
		t.Fatalf("deployment %s did not complete: %v", name, err)
	}
}

// fleet follows the Pods from a watch: the most unavailable at once (Pods
// short of n Ready), and how many Pods were ever Pending.
type fleet struct {
	w       watch.Interface
	done    chan struct{}
	mu      sync.Mutex
	ready   map[string]bool
	pending map[string]bool
	max     int
	n       int
}

func watchFleet(t *testing.T, bed *cluster.Cluster, ns string, n int) *fleet {
	// refit's pre-pull Pods are no Pods of the workload.
	sel := "!" + inplace.PullRolloutLabel
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	f := &fleet{done: make(chan struct{}), ready: map[string]bool{}, pending: map[string]bool{}, n: n}
	for i := range list.Items {
		f.ready[list.Items[i].Name] = podReady(&list.Items[i])
	}
	f.w, err = bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(f.done)
		for ev := range f.w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			f.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(f.ready, pod.Name)
			} else {
				f.ready[pod.Name] = podReady(pod) && pod.DeletionTimestamp == nil
				if pod.Status.Phase == corev1.PodPending {
					f.pending[pod.Name] = true
				}
			}
			ready := 0
			for _, r := range f.ready {
				if r {
					ready++
				}
			}
			if f.n-ready > f.max {
				f.max = f.n - ready
			}
			f.mu.Unlock()
		}
	}()
	return f
}

func (f *fleet) stop() (int, int) {
	f.w.Stop()
	<-f.done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.max, len(f.pending)
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// apiWrites sums the API server's own count of write requests (POST, PUT,
// PATCH, DELETE) from its /metrics, for every client.
func apiWrites(t *testing.T, bed *cluster.Cluster) int64 {
	raw, err := bed.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		t.Fatalf("read API server metrics: %v", err)
	}
	var total float64
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		isWrite := false
		for _, v := range []string{`verb="POST"`, `verb="PUT"`, `verb="PATCH"`, `verb="DELETE"`, `verb="APPLY"`} {
			isWrite = isWrite || strings.Contains(line, v)
		}
		if !isWrite || strings.Contains(line, `resource="leases"`) || strings.Contains(line, `resource="events"`) {
			continue
		}
		f, err := strconv.ParseFloat(line[strings.LastIndex(line, " ")+1:], 64)
		if err == nil {
			total += f
		}
	}
	return int64(total)
}

// countWrites counts the write requests a client sends.
func countWrites(n *int64) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			switch req.Method {
			case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				atomic.AddInt64(n, 1)
			}
			return rt.RoundTrip(req)
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

var deploymentsGVR = schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "deployments"}

// seedDeployment creates namespace name with a Deployment of n Pods on
// app:1.0 (applied as refit applies) and waits for them; the returned
// func deletes the namespace and waits until its Pods are gone, so the
// next method has the nodes' room.
func seedDeployment(ctx context.Context, t *testing.T, bed *cluster.Cluster, name string, n int) func() {
	t.Helper()
	if _, err := bed.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cleanup := func() {
		_ = bed.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{})
		// Wait for the Pods to go, so the next method has the nodes' room.
		_ = wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
			pods, err := bed.Client.CoreV1().Pods(name).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0, nil
		})
	}
	applyDeployment(ctx, t, bed, deploymentManifest(name, n, "app:1.0"))
	waitDeployment(t, bed, name, n)
	return cleanup
}

// applyDeployment writes obj with server-side apply as refit does.
func applyDeployment(ctx context.Context, t *testing.T, bed *cluster.Cluster, obj *unstructured.Unstructured) {
	t.Helper()
	data, _ := obj.MarshalJSON()
	force := true
	_, err := dynamic.NewForConfigOrDie(bed.Config).Resource(deploymentsGVR).Namespace(obj.GetNamespace()).Patch(ctx, obj.GetName(),
		types.ApplyPatchType, data, metav1.PatchOptions{FieldManager: diff.FieldManager, Force: &force})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
}
