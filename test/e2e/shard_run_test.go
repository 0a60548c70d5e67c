//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/refit-gitops/refit/shard"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestShardRun runs three `refit run --shard` replicas over nine Apps of
// one repository: each App is reconciled by one replica, under its lock;
// one replica is SIGKILLed and a commit touching every App follows: every
// App is Ready at it within a bound, and from a watch on the lock Leases
// no lock was ever held by two live replicas. A last commit that no App
// reads is skipped by each, under its lock.
func TestShardRun(t *testing.T) {
	installAppCRD(t)
	ns, home := namespace(t), namespace(t) // the Apps; the replicas' Leases
	ctx := context.Background()
	const lease = 4 * time.Second
	locks := watchLocks(t, home, lease)

	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	const n = 9
	files := map[string]string{}
	version := func(i, v int) {
		files[fmt.Sprintf("apps/app%d/kustomization.yaml", i)] = fmt.Sprintf("resources: [cm.yaml]\nnamespace: %s\nnamePrefix: app%d-\n", ns, i)
		files[fmt.Sprintf("apps/app%d/cm.yaml", i)] = fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {version: %q}\n", fmt.Sprint(v))
	}
	for i := range n {
		version(i, 1)
	}
	head := repo.Commit(files, "nine apps")
	apps := appsWithGitSecret(t, ns, srv)
	t.Cleanup(func() {
		// Once the replicas are stopped nothing removes the finalizers.
		for i := range n {
			_, _ = apps.Patch(context.Background(), fmt.Sprintf("app%d", i), types.MergePatchType, []byte(`{"metadata":{"finalizers":null}}`), metav1.PatchOptions{})
		}
	})

	ids := []string{"r0", "r1", "r2"}
	replicas := map[string]*service{}
	start := func(id string) {
		replicas[id] = startService(t, nil, "--watch-namespace", ns, "--grace", "0s", "--shard", "--identity", id,
			"--leader-election-namespace", home, "--shard-lease-duration", lease.String(), "--shard-renew-interval", "1s",
			"--shard-renew-deadline", "2500ms")
	}
	for _, id := range ids {
		start(id)
	}
	// The Apps come once every replica is a member, so that ownership does
	// not move while they are first applied.
	waitFor(t, 30*time.Second, "three member Leases", func(ctx context.Context) bool {
		l, err := bed.Client.CoordinationV1().Leases(home).List(ctx, metav1.ListOptions{LabelSelector: shard.LabelKey + "=" + shard.RoleMember})
		return err == nil && len(l.Items) == 3
	})
	time.Sleep(2 * time.Second) // every replica sees the others (a watch)
	began := time.Now()
	for i := range n {
		spec := fmt.Sprintf("  source: {url: %q, secretRef: {name: git}}\n  path: apps/app%d\n  interval: 1s\n  driftInterval: 10m\n  timeout: 1m\n", repo.HTTPURL(), i)
		if out, err := kubectl([]byte(appDoc(ns, fmt.Sprintf("app%d", i), spec)), "apply", "--server-side", "-f", "-"); err != nil {
			t.Fatalf("create App %d: %v\n%s", i, err, out)
		}
	}
	allReady := func(sha string) func(context.Context) bool {
		return func(context.Context) bool {
			for i := range n {
				app := getApp(t, apps, fmt.Sprintf("app%d", i))
				if !apimeta.IsStatusConditionTrue(app.Status.Conditions, "Ready") || !strings.HasSuffix(app.Status.LastAppliedRevision, "@sha1:"+sha) {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, 45*time.Second, "every App Ready at the head", allReady(head))
	t.Logf("%d Apps over 3 replicas Ready at the head in %s", n, time.Since(began).Round(100*time.Millisecond))

	// Each App was synced by one replica: one holder of its lock, and one
	// replica counting a sync of it.
	synced := map[string][]string{} // App: replicas that synced it
	for _, id := range ids {
		for label, count := range appReconciles(replicas[id].metrics(t), "success") {
			if count > 0 {
				synced[label] = append(synced[label], id)
			}
		}
	}
	perReplica := map[string]int{}
	for i := range n {
		name := fmt.Sprintf("app%d", i)
		holders := locks.holdersSeen(shard.LockName(ns + "/" + name))
		var by []string
		for label, rs := range synced {
			if label == name || strings.HasSuffix(label, "/"+name) {
				by = append(by, rs...)
			}
		}
		slices.Sort(by)
		if len(holders) != 1 || !slices.Equal(holders, by) {
			t.Errorf("%s: lock held by %v, synced by %v; want one and the same replica", name, holders, by)
			continue
		}
		perReplica[holders[0]]++
	}
	t.Logf("Apps per replica: %v", perReplica)

	// A commit touching every App, then SIGKILL the replica with the most
	// Apps, mid-sync when the watch catches it holding a lock: no Leave,
	// no Release; its locks lapse and are taken over.
	victim := ids[0]
	for _, id := range ids {
		if perReplica[id] > perReplica[victim] {
			victim = id
		}
	}
	for i := range n {
		version(i, 2)
	}
	next := repo.Commit(files, "every app at version 2")
	pushed := time.Now()
	var held []string
	for time.Since(pushed) < 5*time.Second && len(held) == 0 {
		time.Sleep(5 * time.Millisecond)
		held = locks.heldBy(victim)
	}
	killed := time.Now()
	replicas[victim].stop(syscall.SIGKILL)
	locks.markDead(victim, killed)
	// The bound: the lease, then a few passes on a busy 2-core machine.
	waitFor(t, lease+15*time.Second, "every App Ready at the new head after "+victim+" was killed", allReady(next))
	takeovers, _ := locks.takenOver()
	t.Logf("killed %s (%d Apps) %s after the commit, holding locks %v: every App Ready at the new head %s after the kill (lease %s); %d locks taken over",
		victim, perReplica[victim], killed.Sub(pushed).Round(time.Millisecond), held, time.Since(killed).Round(100*time.Millisecond), lease, takeovers)
	for i := range n {
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, fmt.Sprintf("app%d-settings", i), metav1.GetOptions{})
		if err != nil || cm.Data["version"] != "2" {
			t.Errorf("app%d: ConfigMap %v, %v; want version 2", i, cm.Data, err)
		}
	}

	// The killed replica comes back: it takes its Apps again and the
	// others stop theirs without a write (no prune, no status); the next
	// commit is applied once per App, by one replica.
	start(victim)
	waitFor(t, 20*time.Second, victim+" back among the members", func(ctx context.Context) bool {
		return strings.Contains(replicas[victim].out.String(), "shard members changed") &&
			strings.Count(replicas[victim].out.String(), "app started") == perReplica[victim]
	})
	time.Sleep(2 * time.Second) // the others see it (a watch) and stop its Apps
	for i := range n {
		version(i, 3)
	}
	third := repo.Commit(files, "every app at version 3")
	back := waitFor(t, 30*time.Second, "every App Ready at the third commit", allReady(third))
	t.Logf("%s back: every App Ready at the third commit in %s", victim, back.Round(100*time.Millisecond))
	for i := range n {
		name := fmt.Sprintf("app%d", i)
		var by []string
		for _, id := range ids {
			for _, line := range strings.Split(replicas[id].metrics(t), "\n") {
				if strings.HasPrefix(line, "refit_revision_applied_info{") && strings.Contains(line, third) &&
					(strings.Contains(line, `app="`+name+`"`) || strings.Contains(line, "/"+name+`"`)) {
					by = append(by, id)
				}
			}
		}
		if len(by) != 1 {
			t.Errorf("%s: the third commit applied by %v, want one replica", name, by)
		}
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(ctx, name+"-settings", metav1.GetOptions{})
		if err != nil || cm.Data["version"] != "3" {
			t.Errorf("%s: ConfigMap %v, %v; want version 3", name, cm.Data, err)
		}
	}

	// A commit no App reads: each App skips it as unchanged and says so in
	// its status, a write, so under its lock: one lock taken per App.
	taken := map[string]int{}
	for i := range n {
		name := shard.LockName(fmt.Sprintf("%s/app%d", ns, i))
		taken[name] = locks.timesCreated(name)
	}
	files["README.md"] = "read by no app\n"
	fourth := repo.Commit(files, "a file no app reads")
	waitFor(t, 30*time.Second, "every App Ready at the fourth commit", allReady(fourth))
	for i := range n {
		app := getApp(t, apps, fmt.Sprintf("app%d", i))
		ready := apimeta.FindStatusCondition(app.Status.Conditions, "Ready")
		name := shard.LockName(fmt.Sprintf("%s/app%d", ns, i))
		if ready == nil || ready.Reason != "PathUnchanged" {
			t.Errorf("app%d: Ready %+v, want reason PathUnchanged", i, ready)
		}
		if locks.timesCreated(name) == taken[name] {
			t.Errorf("app%d: its unchanged status was written without taking its lock", i)
		}
	}
	for _, v := range locks.stop() {
		t.Error(v)
	}
}
