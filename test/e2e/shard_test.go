//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/refit-gitops/refit/shard"
)

// TestShard runs three members of one group in this process, each with its
// own client, over 300 App keys while workers sync (Acquire, hold, Release)
// every key their member owns. It kills one member (its context cancelled,
// nothing released), then adds one. It proves from the members' own answers
// that every key has one owner once views agree and that no two members
// ever hold one key, from a watch on the API server that no lock is taken
// from a live holder, that the dead member's keys move within the lease
// duration, that the newcomer takes a fair share, and that the Lease of
// the dead member is collected.
func TestShard(t *testing.T) {
	ns := namespace(t)
	opts := shard.DefaultOptions()
	opts.LeaseDuration = 4 * time.Second
	opts.RenewInterval = time.Second
	opts.RenewDeadline = 2500 * time.Millisecond
	opts.GCAfter = 5 * time.Second

	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprintf("team-%d/app-%d", i%7, i)
	}

	locks := watchLocks(t, ns, opts.LeaseDuration)
	led := &ledger{holder: map[string]string{}, syncs: map[string]map[string]time.Time{}}

	a, b, c := startMember(t, ns, "a", opts), startMember(t, ns, "b", opts), startMember(t, ns, "c", opts)
	waitFor(t, 15*time.Second, "members a, b, c to see each other", func(context.Context) bool {
		return agree([]string{"a", "b", "c"}, a, b, c)
	})
	counts := owners(t, keys, a, b, c)
	for _, m := range []string{"a", "b", "c"} {
		if n := counts[m]; n < 70 || n > 130 {
			t.Errorf("member %s owns %d of 300 keys, want 100 ±30 (%v)", m, n, counts)
		}
	}
	ownedByC := ownedBy(keys, c)

	for _, m := range []*member{a, b, c} {
		m.work(keys, led)
	}
	// Members that agree never both own a key: check it while they sync.
	consistentlyTrue(t, 2*time.Second, "every key owned by exactly one of a, b, c", func(context.Context) (bool, string) {
		return oneOwner(keys, a, b, c)
	})

	// Kill c: no Leave, no Release; its Lease and any lock it held lapse.
	killed := time.Now()
	c.kill()
	locks.markDead("c", killed)
	sampling := sampleOwns(keys, a, b) // a and b must never both own a key
	moved := waitFor(t, opts.LeaseDuration+2*time.Second, "c's keys to move to a and b", func(context.Context) bool {
		if !agree([]string{"a", "b"}, a, b) {
			return false
		}
		ok, _ := oneOwner(ownedByC, a, b)
		return ok
	})
	t.Logf("c's %d keys owned by a or b %s after the kill (lease duration %s)", len(ownedByC), moved.Round(10*time.Millisecond), opts.LeaseDuration)
	if moved > opts.LeaseDuration+500*time.Millisecond {
		t.Errorf("c's keys moved after %s, want within the lease duration %s", moved, opts.LeaseDuration)
	}
	// Locks c held when it died lapse as its Lease does. Try them every
	// 100 ms, as a controller retries, so the measure is the lapse and not
	// the workers' pace; the workers sync the rest of c's keys.
	var tries sync.WaitGroup
	for _, name := range locks.heldBy("c") {
		key := keyOfLock(ownedByC, name)
		if key == "" {
			t.Errorf("lock %s held by c guards none of c's keys", name)
			continue
		}
		tries.Add(1)
		go func() {
			defer tries.Done()
			for time.Since(killed) < 3*opts.LeaseDuration && locks.holderOf(name) == "c" {
				for _, mb := range []*member{a, b} {
					mb.sync(key, led)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}()
	}
	tries.Wait()
	if n, last := locks.takenOver(); n > 0 {
		t.Logf("%d locks c held were taken over, the last %s after the kill", n, last.Sub(killed).Round(10*time.Millisecond))
		// The lapse counts from a's or b's sighting of c's last write,
		// just before the kill; then one try and its API calls.
		if last.Sub(killed) > opts.LeaseDuration+1500*time.Millisecond {
			t.Errorf("a lock of c's was taken over %s after the kill, want within the lease duration %s (+1.5s)", last.Sub(killed), opts.LeaseDuration)
		}
	}
	synced := waitFor(t, 30*time.Second, "a and b to sync all of c's keys", func(context.Context) bool {
		return led.allSyncedSince(ownedByC, killed, "a", "b")
	})
	if double := sampling.stop(); len(double) > 0 {
		t.Errorf("after c was killed, keys owned by both a and b: %v", double)
	}
	t.Logf("all of c's keys synced by a or b %s after they moved", synced.Round(10*time.Millisecond))

	// d joins: a and b learn of it through the watch, a moment after d
	// itself; the locks keep that moment harmless.
	joined := time.Now()
	d := startMember(t, ns, "d", opts)
	d.work(keys, led)
	waitFor(t, 15*time.Second, "a, b, d to see each other", func(context.Context) bool {
		return agree([]string{"a", "b", "d"}, a, b, d)
	})
	counts = owners(t, keys, a, b, d)
	if n := counts["d"]; n < 70 || n > 130 {
		t.Errorf("newcomer d owns %d of 300 keys, want 100 ±30 (%v)", n, counts)
	}
	ownedByD := ownedBy(keys, d)
	waitFor(t, 20*time.Second, "d to sync its keys", func(context.Context) bool {
		return led.allSyncedSince(ownedByD, joined, "d")
	})
	consistentlyTrue(t, time.Second, "every key owned by exactly one of a, b, d", func(context.Context) (bool, string) {
		return oneOwner(keys, a, b, d)
	})

	// A member that leaves cleanly hands over at once, not after its lease.
	d.stop()
	if err := d.m.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	left := waitFor(t, opts.LeaseDuration, "a and b to see d leave", func(context.Context) bool {
		return agree([]string{"a", "b"}, a, b)
	})
	if left > opts.LeaseDuration/2 {
		t.Errorf("a and b saw d leave after %s, want at once (well before the lease duration %s)", left, opts.LeaseDuration)
	}

	// c never left: a or b delete its Lease once it has been expired for
	// GCAfter (d left, so its Lease is gone already).
	waitFor(t, opts.LeaseDuration+opts.GCAfter+5*time.Second, "c's member Lease to be collected", func(ctx context.Context) bool {
		_, err := bed.Client.CoordinationV1().Leases(ns).Get(ctx, "refit-shard-c", metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
	if got := a.m.Members(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("after collecting c, a sees %v, want [a b]", got)
	}

	a.stop()
	b.stop()
	for _, v := range led.errors() {
		t.Error(v)
	}
	for _, v := range locks.stop() {
		t.Error(v)
	}
	t.Logf("syncs: %v; locks taken over from a lapsed holder: %d", led.counts(), locks.takeovers)
}

// member is a shard.Member with its workers, as one replica.
type member struct {
	id     string
	m      *shard.Member
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startMember(t *testing.T, ns, id string, opts shard.Options) *member {
	t.Helper()
	cfg := rest.CopyConfig(bed.Config)
	cfg.QPS, cfg.Burst = 200, 400 // the default 5 QPS would pace the test, not the API server
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := shard.New(client.CoordinationV1(), ns, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	mb := &member{id: id, m: m, ctx: ctx, cancel: cancel}
	mb.wg.Add(1)
	go func() {
		defer mb.wg.Done()
		if err := m.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("member %s: %v", id, err)
		}
	}()
	t.Cleanup(mb.stop)
	return mb
}

// work starts workers that sync each key the member owns, as the
// controller would (Acquire, hold for a while, Release): a key newly owned
// at once, each again after an interval.
func (mb *member) work(keys []string, led *ledger) {
	const workers, interval = 8, 5 * time.Second
	for w := range workers {
		mb.wg.Add(1)
		go func() {
			defer mb.wg.Done()
			last := map[string]time.Time{}
			for mb.ctx.Err() == nil {
				for i := w; i < len(keys) && mb.ctx.Err() == nil; i += workers {
					if k := keys[i]; time.Since(last[k]) > interval && mb.sync(k, led) {
						last[k] = time.Now()
					}
				}
				select {
				case <-mb.ctx.Done():
				case <-mb.m.Changes():
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
	}
}

func (mb *member) sync(key string, led *ledger) bool {
	lock, ok, err := mb.m.Acquire(mb.ctx, key)
	if err != nil || !ok {
		return false // not ours now, or the API server is busy: next pass
	}
	led.enter(key, mb.id)
	// Long enough that when d joins, a and b are mid-sync of keys d now
	// owns: d must wait for their locks.
	select {
	case <-lock.Context().Done():
	case <-time.After(200 * time.Millisecond):
	}
	led.leave(key, mb.id)
	if mb.ctx.Err() == nil { // a killed replica releases nothing
		_ = lock.Release(context.Background())
	}
	return true
}

// kill stops the member as a crash would: nothing released, nothing left.
func (mb *member) kill() { mb.stop() }

func (mb *member) stop() {
	mb.cancel()
	mb.wg.Wait()
}

// agree reports whether every member sees exactly want live.
func agree(want []string, ms ...*member) bool {
	for _, m := range ms {
		if !slices.Equal(m.m.Members(), want) {
			return false
		}
	}
	return true
}

// owners counts the keys each member owns, failing on a key owned by none
// or several.
func owners(t *testing.T, keys []string, ms ...*member) map[string]int {
	t.Helper()
	if ok, seen := oneOwner(keys, ms...); !ok {
		t.Fatal(seen)
	}
	counts := map[string]int{}
	for _, k := range keys {
		for _, m := range ms {
			if m.m.Owns(k) {
				counts[m.id]++
			}
		}
	}
	return counts
}

func oneOwner(keys []string, ms ...*member) (bool, string) {
	for _, k := range keys {
		var by []string
		for _, m := range ms {
			if m.m.Owns(k) {
				by = append(by, m.id)
			}
		}
		if len(by) != 1 {
			return false, fmt.Sprintf("key %s owned by %v", k, by)
		}
	}
	return true, ""
}

func ownedBy(keys []string, mb *member) []string {
	var out []string
	for _, k := range keys {
		if mb.m.Owns(k) {
			out = append(out, k)
		}
	}
	return out
}

// ownsSampler checks, every 20 ms, that no key is owned by two members.
type ownsSampler struct {
	done   chan struct{}
	wg     sync.WaitGroup
	double map[string][]string
}

func sampleOwns(keys []string, ms ...*member) *ownsSampler {
	s := &ownsSampler{done: make(chan struct{}), double: map[string][]string{}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			for _, k := range keys {
				var by []string
				for _, m := range ms {
					if m.m.Owns(k) {
						by = append(by, m.id)
					}
				}
				if len(by) > 1 {
					s.double[k] = by
				}
			}
			select {
			case <-s.done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return s
}

func (s *ownsSampler) stop() map[string][]string {
	close(s.done)
	s.wg.Wait()
	return s.double
}

// ledger records, from the workers, who holds which key and when each
// member last finished a sync of it.
type ledger struct {
	mu         sync.Mutex
	holder     map[string]string
	syncs      map[string]map[string]time.Time // member → key → last sync
	violations []string
}

func (l *ledger) enter(key, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if h := l.holder[key]; h != "" {
		l.violations = append(l.violations, fmt.Sprintf("%s: %s acquired the lock while %s held it", key, id, h))
	}
	l.holder[key] = id
}

func (l *ledger) leave(key, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder[key] == id {
		delete(l.holder, key)
	}
	if l.syncs[id] == nil {
		l.syncs[id] = map[string]time.Time{}
	}
	l.syncs[id][key] = time.Now()
}

// allSyncedSince reports whether each key was synced by one of ids after t.
func (l *ledger) allSyncedSince(keys []string, t time.Time, ids ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		ok := false
		for _, id := range ids {
			if l.syncs[id][k].After(t) {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (l *ledger) unsynced(keys []string, t time.Time, ids ...string) int {
	n := 0
	for _, k := range keys {
		if !l.allSyncedSince([]string{k}, t, ids...) {
			n++
		}
	}
	return n
}

func (l *ledger) counts() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := map[string]int{}
	for id, s := range l.syncs {
		n[id] = len(s)
	}
	return n
}

func (l *ledger) errors() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.violations)
}

// lockWatch follows the lock Leases on the API server: a lock may change
// holder without being deleted only when its holder is dead and had not
// renewed it for the lease duration.
type lockWatch struct {
	w          *watchtools.RetryWatcher
	d          time.Duration
	done       chan struct{}
	mu         sync.Mutex
	holder     map[string]string
	last       map[string]time.Time // last event of the current holder
	dead       map[string]time.Time
	takeovers  int
	lastTake   time.Time
	violations []string
	seen       map[string]map[string]bool // lock name: every holder seen
	created    map[string]int             // lock name: times created (taken free)
}

func watchLocks(t *testing.T, ns string, d time.Duration) *lockWatch {
	t.Helper()
	leases := bed.Client.CoordinationV1().Leases(ns)
	selector := shard.LabelKey + "=" + shard.RoleLock
	list, err := leases.List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatalf("list lock leases: %v", err)
	}
	// A retry watcher resumes a watch the API server ends, missing nothing.
	w, err := watchtools.NewRetryWatcherWithContext(context.Background(), list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return leases.Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatalf("watch lock leases: %v", err)
	}
	lw := &lockWatch{w: w, d: d, done: make(chan struct{}), holder: map[string]string{}, last: map[string]time.Time{}, dead: map[string]time.Time{}, seen: map[string]map[string]bool{},
		created: map[string]int{}}
	go lw.follow()
	t.Cleanup(func() { lw.stop() })
	return lw
}

func (lw *lockWatch) markDead(id string, at time.Time) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.dead[id] = at
}

func (lw *lockWatch) follow() {
	defer close(lw.done)
	for ev := range lw.w.ResultChan() {
		l, ok := ev.Object.(*coordinationv1.Lease)
		if !ok {
			lw.mu.Lock()
			lw.violations = append(lw.violations, fmt.Sprintf("lock watch: unexpected event %s %#v", ev.Type, ev.Object))
			lw.mu.Unlock()
			continue
		}
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		now := time.Now()
		lw.mu.Lock()
		prev := lw.holder[l.Name]
		if holder != "" && ev.Type != watch.Deleted {
			if lw.seen[l.Name] == nil {
				lw.seen[l.Name] = map[string]bool{}
			}
			lw.seen[l.Name][holder] = true
		}
		switch ev.Type {
		case watch.Added:
			lw.created[l.Name]++
			if prev != "" {
				lw.violations = append(lw.violations, fmt.Sprintf("lock %s created for %s while %s held it", l.Name, holder, prev))
			}
			lw.holder[l.Name], lw.last[l.Name] = holder, now
		case watch.Modified:
			if prev != holder && prev != "" {
				lw.takeovers++
				lw.lastTake = now
				_, dead := lw.dead[prev]
				// The taker counts from its own sighting of the last
				// renewal, which may come a little before ours.
				if idle := now.Sub(lw.last[l.Name]); !dead || idle < lw.d-500*time.Millisecond {
					lw.violations = append(lw.violations, fmt.Sprintf("lock %s taken by %s from %s (dead: %t) %s after its last renewal, lease %s", l.Name, holder, prev, dead, idle.Round(time.Millisecond), lw.d))
				}
			}
			lw.holder[l.Name], lw.last[l.Name] = holder, now
		case watch.Deleted:
			delete(lw.holder, l.Name)
			delete(lw.last, l.Name)
		}
		lw.mu.Unlock()
	}
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
	return names
}

// holdersSeen returns every replica seen holding lock name, sorted.
func (lw *lockWatch) holdersSeen(name string) []string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var ids []string
	for id := range lw.seen[name] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// timesCreated is how many times lock name was taken while free.
func (lw *lockWatch) timesCreated(name string) int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.created[name]
}

func (lw *lockWatch) holderOf(name string) string {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.holder[name]
}

func keyOfLock(keys []string, name string) string {
	for _, k := range keys {
		if shard.LockName(k) == name {
			return k
		}
	}
	return ""
}

func (lw *lockWatch) takenOver() (int, time.Time) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.takeovers, lw.lastTake
}

func (lw *lockWatch) stop() []string {
	lw.w.Stop()
	<-lw.done
	<-lw.w.Done()
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return slices.Clone(lw.violations)
}
