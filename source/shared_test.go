package source_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

func hubOptions(srv *gitserver.Server, url string) source.Options {
	opts := source.DefaultOptions()
	opts.URL, opts.Ref, opts.Auth = url, source.Ref{Branch: "main"}, basicAuth(srv)
	opts.Timeout = 10 * time.Second
	return opts
}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: want %s, saw %s", d, what, seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHubSharesOneFetch subscribes many apps to one repository: the Git
// server sees one fetch per new commit, and every subscriber is told of
// the new commit and polls it without network I/O.
func TestHubSharesOneFetch(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	a := repo.Commit(map[string]string{"apps/a/cm.yaml": "a: 1\n"}, "a")
	hub := source.NewHub(t.TempDir())
	const apps = 50
	subs := make([]*source.Subscription, apps)
	for i := range subs {
		sub, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour+time.Duration(i)*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
	}
	if n := hub.Repositories(); n != 1 {
		t.Fatalf("repositories = %d, want 1", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	hubDone := make(chan struct{})
	go func() { hub.Run(ctx); close(hubDone) }()
	// Run returns once no checkout is being written: before TempDir goes.
	defer func() { cancel(); <-hubDone }()
	pollAll := func(want string) {
		t.Helper()
		var wg sync.WaitGroup
		for i, sub := range subs {
			wg.Go(func() {
				rev, err := sub.Poll(ctx)
				if err != nil || rev.Commit != want {
					t.Errorf("subscriber %d: poll = %s, %v; want %s", i, rev.Commit, err, want)
				}
			})
		}
		wg.Wait()
	}
	pollAll(a)
	if got := srv.Counts("mono"); got.Fetches != 1 || got.Lists != 2 {
		t.Errorf("server counts after the first commit = %+v, want 1 fetch and 2 listings (the poll's and the fetch's)", got)
	}
	for i, sub := range subs {
		select {
		case <-sub.Changed().C():
		default:
			t.Errorf("subscriber %d was not told of the first commit", i)
		}
	}
	b := repo.Commit(map[string]string{"apps/b/cm.yaml": "b: 1\n"}, "b")
	for range 5 {
		subs[0].Wake().Fire() // webhooks of several apps: one poll each time at most
	}
	for i, sub := range subs {
		select {
		case <-sub.Changed().C():
		case <-time.After(10 * time.Second):
			t.Fatalf("subscriber %d was not told of commit b", i)
		}
	}
	pollAll(b)
	if got := srv.Counts("mono"); got.Fetches != 2 {
		t.Errorf("server counts after the second commit = %+v, want 2 fetches", got)
	}
	if st := hub.Stats(); st.Fetches != 2 {
		t.Errorf("hub stats = %+v, want 2 fetches", st)
	}
}

// TestHubTreesStayWhileRendered has many apps render one repository's
// trees while commits are pushed and polled as fast as the server
// allows. Each app reads every file of the tree its last poll returned,
// and polls again meanwhile, as the app loop does. With one Poller per app
// on a shared cache (before the Hub), apps pruned and replaced one
// another's trees: reads failed with "no such file or directory".
func TestHubTreesStayWhileRendered(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	files := map[string]string{}
	for i := range 20 {
		files[fmt.Sprintf("apps/%02d/cm.yaml", i)] = "v: 0\n"
	}
	repo.Commit(files, "first")
	cache := t.TempDir()
	hub := source.NewHub(cache)
	const apps = 30
	subs := make([]*source.Subscription, apps)
	for i := range subs {
		sub, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
	}
	ctx, cancel := context.WithCancel(t.Context())
	hubDone := make(chan struct{})
	go func() { hub.Run(ctx); close(hubDone) }()
	// Run returns once no checkout is being written: before TempDir goes.
	defer func() { cancel(); <-hubDone }()

	var stop atomic.Bool
	var pushed atomic.Int32
	var wg sync.WaitGroup
	defer wg.Wait() // before the trees' TempDir goes, even on a failure
	defer stop.Store(true)
	wg.Go(func() {
		for i := 1; !stop.Load(); i++ {
			// A push the loaded server refuses (index-pack) is no fault of
			// the Hub: count the pushes that landed.
			if _, err := repo.Repo().Commit(map[string]string{fmt.Sprintf("apps/%02d/cm.yaml", i%20): fmt.Sprintf("v: %d\n", i)}, fmt.Sprint(i)); err == nil {
				pushed.Add(1)
			}
		}
	})
	var reads, failures atomic.Int64
	commits := sync.Map{}
	for i, sub := range subs {
		wg.Go(func() {
			for !stop.Load() {
				rev, err := sub.Poll(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("app %d: poll: %v", i, err)
					}
					return
				}
				commits.Store(rev.Commit, true)
				// A render: read the whole tree, and poll once more half-way
				// (the app loop looks for a newer commit while it syncs).
				n := 0
				err = filepath.WalkDir(rev.Dir, func(p string, d fs.DirEntry, err error) error {
					if err != nil {
						return err
					}
					if n++; n == 10 {
						_, _ = sub.Poll(ctx)
					}
					if d.IsDir() {
						return nil
					}
					_, err = os.ReadFile(p)
					return err
				})
				reads.Add(1)
				time.Sleep(2 * time.Millisecond) // the rest of a render: plan, apply
				if err != nil {
					failures.Add(1)
					t.Errorf("app %d: render of %s: %v", i, rev.Commit[:8], err)
				}
			}
		})
	}
	waitFor(t, 30*time.Second, "10 commits pushed, 1,000 trees rendered, 5 commits seen", func() (bool, string) {
		seen := 0
		commits.Range(func(any, any) bool { seen++; return true })
		// Five commits seen: polls raced renders (on a loaded machine the
		// poller needs longer than ten pushes to see them).
		return pushed.Load() >= 10 && reads.Load() >= 1000 && seen >= 5,
			fmt.Sprintf("%d pushed, %d rendered, %d commits seen", pushed.Load(), reads.Load(), seen)
	})
	stop.Store(true)
	wg.Wait()
	seen := 0
	commits.Range(func(any, any) bool { seen++; return true })
	t.Logf("%d commits pushed, %d seen by the apps, %d renders, %d failed, server counts %+v",
		pushed.Load(), seen, reads.Load(), failures.Load(), srv.Counts("mono"))
	if seen < 5 {
		t.Errorf("apps saw %d commits: the test did not race polls against renders", seen)
	}

}

// TestHubRemovesUnheldTrees: a tree stays while a subscriber holds it (its
// last two commits) and goes once none does.
func TestHubRemovesUnheldTrees(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	cache := t.TempDir()
	hub := source.NewHub(cache)
	subA, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	subB, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c1 := repo.Commit(map[string]string{"cm.yaml": "v: 1\n"}, "1")
	ctx, cancel := context.WithCancel(t.Context())
	hubDone := make(chan struct{})
	go func() { hub.Run(ctx); close(hubDone) }()
	// Run returns once no checkout is being written: before TempDir goes.
	defer func() { cancel(); <-hubDone }()
	commit := func(n int) string {
		for _, sub := range []*source.Subscription{subA, subB} {
			select {
			case <-sub.Changed().C(): // an earlier commit's
			default:
			}
		}
		c := repo.Commit(map[string]string{"cm.yaml": fmt.Sprintf("v: %d\n", n)}, fmt.Sprint(n))
		subA.Wake().Fire()
		<-subA.Changed().C()
		<-subB.Changed().C()
		return c
	}
	poll := func(sub *source.Subscription, want string) {
		t.Helper()
		if rev, err := sub.Poll(ctx); err != nil || rev.Commit != want {
			t.Fatalf("poll = %s, %v; want %s", rev.Commit, err, want)
		}
	}
	trees := func(want ...string) {
		t.Helper()
		// The hub cleans up after its next poll: wake it and wait for it.
		subA.Wake().Fire()
		waitFor(t, 10*time.Second, fmt.Sprintf("trees %v", short(want)), func() (bool, string) {
			got := treesOn(t, cache)
			return fmt.Sprint(short(got)) == fmt.Sprint(short(want)), fmt.Sprint(short(got))
		})
	}
	poll(subA, c1)
	poll(subB, c1)
	c2 := commit(2)
	poll(subA, c2)
	c3 := commit(3)
	poll(subA, c3)
	trees(c1, c2, c3) // B renders c1, A may still render c2
	c4 := commit(4)
	poll(subA, c4)
	trees(c1, c3, c4) // c2: A moved on twice, B never had it
	poll(subB, c4)
	trees(c1, c3, c4) // B may still render c1 while it polled c4
	c5 := commit(5)
	poll(subB, c5)
	trees(c3, c4, c5)
}

func short(commits []string) []string {
	out := make([]string, len(commits))
	for i, c := range commits {
		out[i] = c[:8]
	}
	slices.Sort(out)
	return out
}

// treesOn lists the commits checked out under a Hub's cache.
func treesOn(t *testing.T, cache string) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join(cache, "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() && len(filepath.Base(d)) == 40 {
			out = append(out, filepath.Base(d))
		}
	}
	return out
}

// A closed subscription lets go of its trees: the next collection removes
// them, and it is not told of later commits.
func TestHubClosedSubscriptionReleasesItsTrees(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	c1 := repo.Commit(map[string]string{"cm.yaml": "v: 1\n"}, "1")
	cache := t.TempDir()
	hub := source.NewHub(cache)
	stays, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	leaves, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	hubDone := make(chan struct{})
	go func() { hub.Run(ctx); close(hubDone) }()
	defer func() { cancel(); <-hubDone }()
	first, err := leaves.Poll(ctx)
	if err != nil || first.Commit != c1 {
		t.Fatalf("poll: %v %v, want %s", first.Commit, err, c1)
	}
	leaves.Close()
	// Two more commits: without the close, the tree of c1 stays held.
	for i := 2; i <= 3; i++ {
		c := repo.Commit(map[string]string{"cm.yaml": fmt.Sprintf("v: %d\n", i)}, fmt.Sprint(i))
		waitFor(t, 10*time.Second, "commit "+c[:8]+" polled", func() (bool, string) {
			rev, err := stays.Poll(ctx)
			return err == nil && rev.Commit == c, rev.Commit
		})
	}
	waitFor(t, 10*time.Second, "the closed subscription's tree removed", func() (bool, string) {
		_, err := os.Stat(first.Dir)
		return os.IsNotExist(err), fmt.Sprint(err)
	})
}
