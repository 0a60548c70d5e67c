//go:build bench

package bench

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/refit-gitops/refit/shard"
	"github.com/refit-gitops/refit/test/gitserver"
)

// shardLease is the replicas' lease by default (BENCH_SHARD_LEASE): a
// killed replica's Apps move after it. Short, as in the e2e test; the
// renew interval and deadline scale with it (1 s and 2.5 s at 4 s).
const shardLease = 4 * time.Second

// shardRow is one N of TestAppsShardedAtScale.
type shardRow struct {
	n                 int
	all, killAt, left time.Duration // all Ready after start; the kill after start; all Ready after the kill
	readyAtKill       int
	victim            string
	victimLocks       int
	takeovers         int
	twice             int // Apps applied by two replicas (one after the other)
	stuck             int // Apps never Ready at the head
	violations        []string
	peak              map[string]float64
	requests          requestCounts
}

// TestAppsShardedAtScale runs three `refit run --shard` replicas over N App
// objects from cold, SIGKILLs the replica holding the most App locks once
// about half the Apps are Ready, and measures the time until every App is
// Ready at the head. From a watch on the per-App lock Leases it checks that
// no lock ever had two live holders (so no App was applied by two replicas
// at once), and from the replicas' metrics how many Apps were applied by
// two replicas one after the other (the killed one's, taken over). N from
// BENCH_SHARD_APPS (default 100,500); each N on a cluster of its own.
func TestAppsShardedAtScale(t *testing.T) {
	ns := benchSizes(t, "BENCH_SHARD_APPS", []int{100, 500})
	lease := shardLease
	if v := os.Getenv("BENCH_SHARD_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 4*time.Second || d%time.Second != 0 {
			t.Fatalf("BENCH_SHARD_LEASE %q: want whole seconds, at least 4s", v)
		}
		lease = d
	}
	bin := buildRefit(t)
	var rows []shardRow
	for _, n := range ns {
		t.Run(fmt.Sprint(n), func(t *testing.T) { rows = append(rows, shardedAtScale(t, bin, n, lease)) })
	}
	fmt.Printf("apps | 3 replicas, lease %s: all Ready | SIGKILL at (Apps Ready then) | all Ready after the kill | Apps never Ready | killed: locks held | locks taken over | Apps applied by two replicas | locks with two live holders | peak RSS r0 / r1 / r2 | API requests (per app)\n", lease)
	for _, r := range rows {
		all := r.all.Round(100 * time.Millisecond).String()
		if r.stuck > 0 {
			all = "not all (" + all + ")"
		}
		kill, left := fmt.Sprintf("%s (%d)", r.killAt.Round(100*time.Millisecond), r.readyAtKill), r.left.Round(100*time.Millisecond).String()
		if r.victim == "none" {
			kill, left = fmt.Sprintf("no kill: half never Ready (%d)", r.readyAtKill), "—"
		}
		fmt.Printf("%d | %s | %s | %s | %d | %s: %d | %d | %d | %d | %.0f / %.0f / %.0f MiB | %d (%.1f)\n", r.n, all,
			kill, left, r.stuck, r.victim, r.victimLocks, r.takeovers,
			r.twice, len(r.violations), r.peak["r0"], r.peak["r1"], r.peak["r2"], r.requests.total(), float64(r.requests.total())/float64(r.n))
	}
	for _, r := range rows {
		fmt.Printf("API requests, %d apps over 3 replicas (every client), top 20 by verb and resource:\n%s", r.n, r.requests.top(20, r.n))
	}
	fmt.Println("command: BENCH_SHARD_APPS=" + sizesFlag(ns) + " BENCH_SHARD_LEASE=" + lease.String() + " go test -tags bench -count=1 -timeout 90m -run 'AppsShardedAtScale$' -v ./test/bench/")
}

func shardedAtScale(t *testing.T, bin string, n int, lease time.Duration) shardRow {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	bed := startAppsBed(t, "shard", srv)
	repo := srv.NewRepo(t, fmt.Sprintf("mono%d", n))
	files := map[string]string{}
	for i := range n {
		benchApps(files, i, 1)
	}
	head := repo.Commit(files, "apps")
	bed.createApps(t, n, repo.HTTPURL())
	apps := bed.watchApps(t)
	const home = "refit-system" // the replicas' member and lock Leases
	locks := watchLocks(t, bed, home, lease)

	requests0 := apiRequests(t, bed)
	start := time.Now()
	ids := []string{"r0", "r1", "r2"}
	replicas := map[string]*refitProc{}
	for _, id := range ids {
		replicas[id] = startRefit(t, bin, bed, fmt.Sprintf("%d.%s", n, id), "--shard", "--identity", id, "--leader-election-namespace", home,
			"--shard-lease-duration", lease.String(), "--shard-renew-interval", (lease / 4).String(), "--shard-renew-deadline", (lease * 5 / 8).String())
	}
	row := shardRow{n: n, peak: map[string]float64{}}
	var err error
	row.killAt, err = apps.await("half the Apps Ready at the head", head, start, 20*time.Minute, func() bool { return apps.readyAt(head) >= n/2 })
	if err != nil {
		// No kill: the row says how far the replicas got.
		t.Error(err)
		row.victim, row.stuck, row.readyAtKill = "none", n-apps.readyAt(head), apps.readyAt(head)
		row.requests = apiRequests(t, bed).since(requests0)
		row.all = time.Since(start)
		for _, id := range ids {
			row.peak[id] = peakRSSMiB(t, replicas[id].cmd.Process.Pid)
		}
		row.violations = locks.stop()
		return row
	}

	// The victim is caught mid-sync: no Leave, no Release; its locks lapse
	// and are taken over after the lease.
	succ := map[string]map[string]int{} // replica: App: applied reconciliations
	held := map[string]int{}
	row.victim = ids[0]
	for _, id := range ids {
		succ[id] = replicas[id].successes()
		held[id] = len(locks.heldBy(id))
		if held[id] > held[row.victim] || held[id] == held[row.victim] && len(succ[id]) > len(succ[row.victim]) {
			row.victim = id
		}
	}
	victim := replicas[row.victim]
	row.peak[row.victim] = peakRSSMiB(t, victim.cmd.Process.Pid)
	row.victimLocks, row.readyAtKill = held[row.victim], apps.readyAt(head)
	killed := time.Now()
	victim.kill()
	locks.markDead(row.victim)
	row.killAt = killed.Sub(start)

	// Apps left stuck are counted, and the figures still printed.
	row.left, err = apps.await("every App Ready at the head after the kill", head, killed, 20*time.Minute, func() bool { return apps.readyAt(head) == n })
	if err != nil {
		t.Error(err)
		row.stuck = n - apps.readyAt(head)
	}
	row.all = time.Since(start)
	row.requests = apiRequests(t, bed).since(requests0)
	by := map[string][]string{} // App: replicas that applied it
	for _, id := range ids {
		if id != row.victim {
			succ[id] = replicas[id].successes()
			row.peak[id] = peakRSSMiB(t, replicas[id].cmd.Process.Pid)
		}
		for app, c := range succ[id] {
			if c > 0 {
				by[app] = append(by[app], id)
			}
		}
	}
	for i := range n {
		switch rs := by[appName(i)]; len(rs) {
		case 0:
			// Applied by the victim after its metrics were read, just
			// before the kill: Ready says it was applied.
		case 1:
		default:
			row.twice++
		}
	}
	row.takeovers = locks.takenOver()
	row.violations = locks.stop()
	for _, v := range row.violations {
		t.Error(v)
	}
	return row
}

// lockWatch follows the per-App lock Leases: a lock may pass from one
// holder to another without being released (deleted) only when its holder
// is dead and has not renewed it for the lease duration; any other change
// of holder, or a lock created while held, means two live replicas held
// one App's lock at once.
type lockWatch struct {
	w    *watchtools.RetryWatcher
	d    time.Duration // the lease
	done chan struct{}

	mu         sync.Mutex
	holder     map[string]string    // lock: current holder
	renewed    map[string]time.Time // lock: when its holder last wrote it, as the watch saw
	dead       map[string]bool
	takeovers  int
	violations []string
}

func watchLocks(t *testing.T, bed *appsBed, ns string, lease time.Duration) *lockWatch {
	t.Helper()
	leases := bed.Client.CoordinationV1().Leases(ns)
	selector := shard.LabelKey + "=" + shard.RoleLock
	list, err := leases.List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("list lock Leases: %v", err)
	}
	// A retry watcher resumes a watch the API server ends, missing nothing.
	w, err := watchtools.NewRetryWatcherWithContext(context.Background(), list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return leases.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatalf("watch lock Leases: %v", err)
	}
	lw := &lockWatch{w: w, d: lease, done: make(chan struct{}), holder: map[string]string{}, renewed: map[string]time.Time{}, dead: map[string]bool{}}
	go lw.follow()
	t.Cleanup(func() { lw.stop() })
	return lw
}

func (lw *lockWatch) follow() {
	defer close(lw.done)
	for ev := range lw.w.ResultChan() {
		l, ok := ev.Object.(*coordinationv1.Lease)
		if !ok {
			continue // a bookmark or the watcher's error status; it retries
		}
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		lw.mu.Lock()
		lw.event(ev.Type, l.Name, holder, time.Now())
		lw.mu.Unlock()
	}
}

func (lw *lockWatch) event(typ watch.EventType, name, holder string, now time.Time) {
	prev := lw.holder[name]
	switch typ {
	case watch.Added:
		if prev != "" {
			lw.violations = append(lw.violations, fmt.Sprintf("lock %s created for %s while %s held it", name, holder, prev))
		}
		lw.holder[name], lw.renewed[name] = holder, now
	case watch.Modified:
		if prev != "" && prev != holder {
			lw.takeovers++
			// The taker counts from its own sighting of the last renewal,
			// which may come a little before ours.
			if idle := now.Sub(lw.renewed[name]); !lw.dead[prev] || idle < lw.d-500*time.Millisecond {
				lw.violations = append(lw.violations, fmt.Sprintf("lock %s taken by %s from %s (dead: %t) %s after its last renewal, lease %s",
					name, holder, prev, lw.dead[prev], idle.Round(time.Millisecond), lw.d))
			}
		}
		lw.holder[name], lw.renewed[name] = holder, now
	case watch.Deleted:
		delete(lw.holder, name)
		delete(lw.renewed, name)
	}
}

func (lw *lockWatch) markDead(id string) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.dead[id] = true
}

func (lw *lockWatch) heldBy(id string) []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var names []string
	for name, h := range lw.holder {
		if h == id {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

func (lw *lockWatch) takenOver() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.takeovers
}

// stop ends the watch and returns what it found wrong.
func (lw *lockWatch) stop() []string {
	lw.w.Stop()
	<-lw.done
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return slices.Clone(lw.violations)
}
