package reconcile

import (
	"bufio"
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/refit-gitops/refit/story"
	"github.com/refit-gitops/refit/web"
)

// TestHTTPServesTheView: the view answers / and paths no other handler
// takes; the probes stay where they are; its event stream outlives the
// server's write timeout and ends when the server shuts down, so a
// browser left open does not hold the service's shutdown.
func TestHTTPServesTheView(t *testing.T) {
	var ready atomic.Bool
	ready.Store(true)
	errs := make(chan error, 1)
	hopts := HTTPOptions{WriteTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, View: web.New(web.DefaultOptions())}
	srv, addr, err := serveHTTPWith(ServiceOptions{Listen: "127.0.0.1:0", Hooks: text("hook")}, hopts, &ready, errs)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{"/": "<title>refit</title>", "/healthz": "ok", "/hook/x": "hook", "/assets/view.js": "EventSource"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			b.WriteString(sc.Text())
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(b.String(), want) {
			t.Errorf("GET %s: %s, want 200 with %q", path, resp.Status, want)
		}
	}

	resp, err := http.Get("http://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	<-lines                            // the first state
	time.Sleep(500 * time.Millisecond) // past the write timeout
	hopts.View.(*web.View).Emit(story.Event{Kind: story.SyncStarted, App: "shop"})
	deadline := time.After(5 * time.Second)
	for seen := false; !seen; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the stream ended at the server's write timeout")
			}
			seen = strings.Contains(l, "<td>shop</td>")
		case <-deadline:
			t.Fatal("no update on the stream after the write timeout")
		}
	}

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown with a viewer: %v after %s", err, time.Since(start))
	}
	for range lines {
	}
}
