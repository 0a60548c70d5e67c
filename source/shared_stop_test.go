package source_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

// consistently fails if cond stops holding within d.
func consistently(t *testing.T, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if ok, seen := cond(); !ok {
			t.Fatalf("want %s for %v, saw %s", what, d, seen)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runHub runs hub until the test ends; Run returns once no checkout is
// being written, before the test's TempDirs go.
func runHub(t *testing.T, hub *source.Hub) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { hub.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return ctx
}

// cacheEntries lists what is under a Hub's cache directory.
func cacheEntries(t *testing.T, cache string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != cache {
			out = append(out, p)
		}
		if d.IsDir() && p != cache {
			return fs.SkipDir
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestHubStopsUnusedPoller: once the last subscriber of a repository
// closed, the Hub lists it no more and removes its trees and directory;
// a new subscriber then gets a poller that works.
func TestHubStopsUnusedPoller(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	c1 := repo.Commit(map[string]string{"cm.yaml": "v: 1\n"}, "1")
	cache := t.TempDir()
	hub := source.NewHub(cache)
	source.SetLinger(hub, 100*time.Millisecond)
	ctx := runHub(t, hub)
	a, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	for _, sub := range []*source.Subscription{a, b} {
		if rev, err := sub.Poll(ctx); err != nil || rev.Commit != c1 {
			t.Fatalf("poll = %s, %v; want %s", rev.Commit, err, c1)
		}
	}
	a.Close()
	// One subscriber left: the poller keeps listing for it.
	lists := srv.Counts("mono").Lists
	waitFor(t, 10*time.Second, "more listings while b subscribes", func() (bool, string) {
		n := srv.Counts("mono").Lists
		return n >= lists+3, fmt.Sprint(n)
	})
	b.Close()
	waitFor(t, 10*time.Second, "the poller stopped and its cache removed", func() (bool, string) {
		got := cacheEntries(t, cache)
		return hub.Repositories() == 0 && len(got) == 0, fmt.Sprintf("%d repositories, cache %v", hub.Repositories(), got)
	})
	lists = srv.Counts("mono").Lists
	consistently(t, time.Second, "no listing without subscribers", func() (bool, string) {
		n := srv.Counts("mono").Lists
		return n == lists, fmt.Sprintf("%d listings, %d before", n, lists)
	})

	again, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	rev, err := again.Poll(ctx)
	if err != nil || rev.Commit != c1 {
		t.Fatalf("poll after re-subscribing = %s, %v; want %s", rev.Commit, err, c1)
	}
	if _, err := os.Stat(filepath.Join(rev.Dir, "cm.yaml")); err != nil {
		t.Fatalf("tree of the new poller: %v", err)
	}
	c2 := repo.Commit(map[string]string{"cm.yaml": "v: 2\n"}, "2")
	waitFor(t, 10*time.Second, "the new poller finds "+c2[:8], func() (bool, string) {
		rev, err := again.Poll(ctx)
		return err == nil && rev.Commit == c2, fmt.Sprint(rev.Commit, err)
	})
	if st := hub.Stats(); st.Fetches != 3 {
		t.Errorf("hub stats = %+v, server %+v, want 3 fetches (c1 twice: once per poller; c2)", st, srv.Counts("mono"))
	}
}

// TestHubLingers: an app that restarts closes its subscription and
// subscribes again at once; within the linger it gets the same poller,
// and its commit costs no fetch.
func TestHubLingers(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	c1 := repo.Commit(map[string]string{"cm.yaml": "v: 1\n"}, "1")
	hub := source.NewHub(t.TempDir())
	source.SetLinger(hub, time.Minute)
	ctx := runHub(t, hub)
	sub, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sub.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	sub.Close()
	sub, err = hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if rev, err := sub.Poll(ctx); err != nil || rev.Commit != c1 {
		t.Fatalf("poll = %s, %v; want %s", rev.Commit, err, c1)
	}
	if got := srv.Counts("mono"); got.Fetches != 1 || got.Lists != 2 {
		t.Errorf("server counts = %+v, want the first poll's only (1 fetch, 2 listings)", got)
	}
}

// TestHubIntervalFollowsSubscribers: the poller lists at the shortest
// interval of the subscribers it has now: a short one joining speeds it
// up at once, and its leaving slows it down again.
func TestHubIntervalFollowsSubscribers(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	repo.Commit(map[string]string{"cm.yaml": "v: 1\n"}, "1")
	hub := source.NewHub(t.TempDir())
	ctx := runHub(t, hub)
	slow, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	lists := srv.Counts("mono").Lists
	fast, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "listings every 20ms once the fast subscriber joined", func() (bool, string) {
		n := srv.Counts("mono").Lists
		return n >= lists+5, fmt.Sprintf("%d listings, %d before", n, lists)
	})
	fast.Close()
	time.Sleep(100 * time.Millisecond) // a listing under way when it closed
	lists = srv.Counts("mono").Lists
	consistently(t, time.Second, "no listing at the slow subscriber's hourly interval", func() (bool, string) {
		n := srv.Counts("mono").Lists
		return n == lists, fmt.Sprintf("%d listings, %d before", n, lists)
	})
}

// TestHubSubscribeCloseConcurrently has apps subscribe, render and close
// over and over, with no linger, while commits are pushed: pollers stop
// (removing their trees) and new ones start on the same directory again
// and again, each fetching afresh. Every render reads its whole tree;
// once all have closed the cache is empty.
func TestHubSubscribeCloseConcurrently(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "mono")
	files := map[string]string{}
	for i := range 10 {
		files[fmt.Sprintf("apps/%02d/cm.yaml", i)] = "v: 0\n"
	}
	repo.Commit(files, "first")
	cache := t.TempDir()
	hub := source.NewHub(cache)
	source.SetLinger(hub, 0)
	ctx := runHub(t, hub)

	var stop atomic.Bool
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop.Store(true)
	wg.Go(func() {
		for i := 1; !stop.Load(); i++ {
			_, _ = repo.Repo().Commit(map[string]string{fmt.Sprintf("apps/%02d/cm.yaml", i%10): fmt.Sprintf("v: %d\n", i)}, fmt.Sprint(i))
			time.Sleep(100 * time.Millisecond)
		}
	})
	var renders atomic.Int64
	var commits sync.Map
	for i := range 4 {
		wg.Go(func() {
			for !stop.Load() {
				sub, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), 10*time.Millisecond)
				if err != nil {
					t.Errorf("app %d: subscribe: %v", i, err)
					return
				}
				rev, err := sub.Poll(ctx)
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("app %d: poll: %v", i, err)
					}
					sub.Close()
					return
				}
				commits.Store(rev.Commit, true)
				n := 0
				err = filepath.WalkDir(rev.Dir, func(p string, d fs.DirEntry, err error) error {
					if err != nil || d.IsDir() {
						return err
					}
					n++
					_, err = os.ReadFile(p)
					return err
				})
				if err != nil || n != 10 {
					t.Errorf("app %d: render of %s: %d files, %v", i, rev.Commit[:8], n, err)
				}
				renders.Add(1)
				sub.Close()
				// Apart now and then, so that every app has closed at times.
				time.Sleep(time.Duration(i*7) * time.Millisecond)
			}
		})
	}
	seen := func() int {
		n := 0
		commits.Range(func(any, any) bool { n++; return true })
		return n
	}
	// More fetches than commits seen: pollers stopped and new ones fetched
	// the same commit again, into the directory the old one cleaned.
	waitFor(t, 60*time.Second, "200 renders, 15 fetches more than commits seen", func() (bool, string) {
		f := srv.Counts("mono").Fetches
		return renders.Load() >= 200 && f >= seen()+15,
			fmt.Sprintf("%d renders, %d fetches, %d commits seen", renders.Load(), f, seen())
	})
	stop.Store(true)
	wg.Wait()
	t.Logf("%d renders, %d commits seen, server counts %+v, hub stats %+v", renders.Load(), seen(), srv.Counts("mono"), hub.Stats())
	waitFor(t, 10*time.Second, "every poller stopped and the cache empty", func() (bool, string) {
		got := cacheEntries(t, cache)
		return hub.Repositories() == 0 && len(got) == 0, fmt.Sprintf("%d repositories, cache %v", hub.Repositories(), got)
	})
}
