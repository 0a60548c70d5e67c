package source_test

import (
	"context"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

// TestSubscriptionRefresh: with an interval of an hour, a commit pushed
// after the first poll is not seen by Poll, but after Refresh it is — a
// reconcile request must not wait out the interval of a poller it shares.
func TestSubscriptionRefresh(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "refresh")
	c1 := repo.Commit(map[string]string{"cm.yaml": "v: 1\n"}, "1")
	hub := source.NewHub(t.TempDir())
	ctx := runHub(t, hub)
	sub, err := hub.Subscribe(hubOptions(srv, repo.HTTPURL()), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rev, err := sub.Poll(ctx)
	if err != nil || rev.Commit != c1 {
		t.Fatalf("first poll: %s, %v; want %s", rev.Commit, err, c1)
	}
	c2 := repo.Commit(map[string]string{"cm.yaml": "v: 2\n"}, "2")
	if rev, _ := sub.Poll(ctx); rev.Commit != c1 {
		t.Fatalf("poll within the interval: %s; want the last polled %s (no network)", rev.Commit, c1)
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := sub.Refresh(rctx); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if rev, err := sub.Poll(ctx); err != nil || rev.Commit != c2 {
		t.Fatalf("poll after refresh: %s, %v; want %s", rev.Commit, err, c2)
	}
}
