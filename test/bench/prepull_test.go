//go:build bench

package bench

import (
	"context"
	"fmt"
	"math"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/test/cluster"
)

// The pre-pull benchmark: an image bump of N Pods on full nodes where an
// image costs prePullBenchPull to pull (once per node) and a container
// prePullBenchStart to start, done in place with pre-pull, in place
// without, and by recreation, side by side on one cluster.
const (
	prePullBenchPull  = 10 * time.Second
	prePullBenchStart = 2 * time.Second
)

type pullRow struct {
	method        string
	wall          time.Duration
	podSecondsOut float64 // ∫ (N − Ready Pods) dt
	everPending   int
	writesPerPod  float64
	refitPerPod   float64
	mostDown      int
}

// TestPrePullVersusNot: make bench, or go test -tags bench -count=1
// -run PrePullVersusNot -v ./test/bench/ (BENCH_PREPULL_PODS=N, default 100).
func TestPrePullVersusNot(t *testing.T) {
	n := 100
	if s := os.Getenv("BENCH_PREPULL_PODS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	ctx := context.Background()
	opts := cluster.DefaultOptions()
	opts.Name = cluster.EphemeralName(fmt.Sprintf("benchpull%d", n))
	opts.Ephemeral = true
	opts.Log = os.Stderr
	opts.StartDelay, opts.RestartDelay = prePullBenchStart, prePullBenchStart
	opts.PodsPerNode = int(math.Ceil(float64(n) / float64(opts.Nodes))) // full: no room for a surge
	bed, err := cluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = bed.Stop(context.Background()) }()
	// Every kwok node pulls an image it lacks in prePullBenchPull (the
	// bed's per-node pull delay).
	nodes, err := bed.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.NodeTypeLabel + "=kwok"})
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range nodes.Items {
		patch := fmt.Sprintf(`{"metadata":{"annotations":{"kwok.refit.dev/pull-delay":%q}}}`, prePullBenchPull.String())
		patched, err := bed.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// A real node has the kubelet's sandbox (pause) image and lists it;
		// the pre-pull Pods run it.
		patched.Status.Images = append(patched.Status.Images, corev1.ContainerImage{Names: []string{inplace.DefaultPullerImage}, SizeBytes: 700000})
		if _, err := bed.Client.CoreV1().Nodes().UpdateStatus(ctx, patched, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	bound := n / 4
	var rows []pullRow
	for i, method := range []string{"in place, pre-pull", "in place, no pre-pull", "recreate"} {
		// Each method bumps to an image of its own: no node has it yet.
		r := runPullOne(t, bed, n, method, fmt.Sprintf("app:1.%d", i+1))
		rows = append(rows, r)
	}
	lower := prePullBenchPull.Seconds() + math.Ceil(float64(n)/float64(bound))*prePullBenchStart.Seconds()
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "%d Pods on full nodes, maxUnavailable %d, pull %s, start %s\t\t\t\t\t\t\t\n", n, bound, prePullBenchPull, prePullBenchStart)
	fmt.Fprintln(tw, "method\twall\tPod-seconds unavailable\tper Pod\tever Pending\tmost unavailable\tAPI writes/pod\trefit writes/pod\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f s\t%d\t%d\t%.1f\t%.1f\t\n", r.method, r.wall.Round(100*time.Millisecond),
			r.podSecondsOut, r.podSecondsOut/float64(n), r.everPending, r.mostDown, r.writesPerPod, r.refitPerPod)
	}
	tw.Flush()
	fmt.Printf("goal: wall ≈ one pull + ⌈N/maxUnavailable⌉ × start = %.0f s; Pod-seconds unavailable ≈ N × start = %.0f\n",
		lower, float64(n)*prePullBenchStart.Seconds())
	fmt.Println("command: go test -tags bench -count=1 -timeout 30m -run PrePullVersusNot -v ./test/bench/")
}

func runPullOne(t *testing.T, bed *cluster.Cluster, n int, method, image string) pullRow {
	ctx := context.Background()
	name := map[string]string{"in place, pre-pull": "prepull", "in place, no pre-pull": "nopull", "recreate": "recreate"}[method]
	defer seedDeployment(ctx, t, bed, name, n)()

	f := watchOutage(t, bed, name, n)
	writesBefore := apiWrites(t, bed)
	start := time.Now()
	var refitWrites int64
	if method == "recreate" {
		applyDeployment(ctx, t, bed, deploymentManifest(name, n, image))
		waitDeployment(t, bed, name, n)
	} else {
		cfg := rest.CopyConfig(bed.Config)
		cfg.QPS, cfg.Burst = 200, 400
		cfg.WrapTransport = countWrites(&refitWrites)
		planner, err := diff.NewPlanner(cfg)
		if err != nil {
			t.Fatal(err)
		}
		po := diff.DefaultOptions()
		po.Namespace = name
		plan, err := planner.Plan(ctx, []diff.Desired{{Object: deploymentManifest(name, n, image)}}, po)
		if err != nil {
			t.Fatal(err)
		}
		engine, err := inplace.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		io := inplace.DefaultOptions()
		io.PrePull.Disabled = method != "in place, pre-pull"
		res, err := engine.Rollout(ctx, plan.Changes[0], io)
		if err != nil || res.Outcome != inplace.Succeeded {
			t.Fatalf("%s: %+v %v", method, res, err)
		}
	}
	wall := time.Since(start)
	writes := apiWrites(t, bed) - writesBefore
	out, most, pending := f.stop(time.Now())
	r := pullRow{method: method, wall: wall, podSecondsOut: out, everPending: pending, mostDown: most,
		writesPerPod: float64(writes) / float64(n), refitPerPod: float64(atomic.LoadInt64(&refitWrites)) / float64(n)}
	fmt.Printf("%s, %d pods: %s, %.0f Pod-seconds unavailable, %d ever Pending, %.1f API writes/pod\n",
		method, n, wall.Round(100*time.Millisecond), out, pending, r.writesPerPod)
	return r
}

// outage follows the workload's Pods (not refit's pre-pull Pods) from a
// watch and integrates how many of the n are not Ready over time.
type outage struct {
	w       watch.Interface
	done    chan struct{}
	mu      sync.Mutex
	ready   map[string]bool
	pending map[string]bool
	n       int
	last    time.Time
	short   int
	most    int
	seconds float64
}

func watchOutage(t *testing.T, bed *cluster.Cluster, ns string, n int) *outage {
	sel := "!" + inplace.PullRolloutLabel
	list, err := bed.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	o := &outage{done: make(chan struct{}), ready: map[string]bool{}, pending: map[string]bool{}, n: n, last: time.Now()}
	for i := range list.Items {
		o.ready[list.Items[i].Name] = podReady(&list.Items[i])
	}
	o.short = o.shortLocked()
	o.w, err = bed.Client.CoreV1().Pods(ns).Watch(context.Background(), metav1.ListOptions{LabelSelector: sel, ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(o.done)
		for ev := range o.w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			o.mu.Lock()
			o.advanceLocked(time.Now())
			if ev.Type == watch.Deleted {
				delete(o.ready, pod.Name)
			} else {
				o.ready[pod.Name] = podReady(pod) && pod.DeletionTimestamp == nil
				if pod.Status.Phase == corev1.PodPending {
					o.pending[pod.Name] = true
				}
			}
			o.short = o.shortLocked()
			o.most = max(o.most, o.short)
			o.mu.Unlock()
		}
	}()
	return o
}

func (o *outage) shortLocked() int {
	ready := 0
	for _, r := range o.ready {
		if r {
			ready++
		}
	}
	return max(o.n-ready, 0)
}

func (o *outage) advanceLocked(now time.Time) {
	o.seconds += float64(o.short) * now.Sub(o.last).Seconds()
	o.last = now
}

// stop ends the watch and returns the Pod-seconds unavailable, the most
// unavailable at once and how many Pods were ever Pending.
func (o *outage) stop(now time.Time) (float64, int, int) {
	o.w.Stop()
	<-o.done
	o.mu.Lock()
	defer o.mu.Unlock()
	o.advanceLocked(now)
	return o.seconds, o.most, len(o.pending)
}
