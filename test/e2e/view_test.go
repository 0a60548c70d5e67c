//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/inplace"
	"github.com/refit-gitops/refit/reconcile"
	"github.com/refit-gitops/refit/story"
	"github.com/refit-gitops/refit/test/gitserver"
	"github.com/refit-gitops/refit/web"
)

const viewManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 6
  strategy:
    rollingUpdate: {maxUnavailable: 2}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      readinessGates: [{conditionType: InPlaceUpdateReady}]
      containers:
      - {name: web, image: "nginx:1.27"}`

// TestViewInBrowser opens the live view in headless Chromium while a real
// in-place rollout runs, fed by the engine's progress reports: the page
// sees Pods change state and the rollout end without reloading, and with
// JavaScript disabled it is the server-rendered snapshot. Screenshots go to
// $REFIT_ARTIFACTS or the test's artifact directory.
func TestViewInBrowser(t *testing.T) {
	chromium := findChromium(t)
	ns := namespace(t)
	base := parseObjects(t, viewManifest)
	applyForTest(t, ns, base)
	waitReadyPods(t, ns, 6, &base[0])
	// A tag no node has yet: the rollout pre-pulls it first, whose reports
	// come before the first batch's (once, a copy of the teller here told
	// them as a batch of no Pods, and the test waited for the page in vain).
	bumped := parseObjects(t, strings.ReplaceAll(viewManifest, `"nginx:1.27"`, `"nginx:1.28-`+ns+`"`))
	change := plan(t, ns, bumped).Changes[0]
	if change.Path != diff.PathInPlace {
		t.Fatalf("plan: %s %s, want in place", change.Class, change.Path)
	}

	const token = "view-token-for-the-test"
	vopts := web.DefaultOptions()
	vopts.Token = token
	view := web.New(vopts)
	srv := httptest.NewServer(view)
	// Closed after the browser (cleanups run last first): Close waits for
	// the page's event stream, which ends when the browser goes.
	t.Cleanup(srv.Close)

	browser := startChromium(t, chromium)
	tab, cancelTab := context.WithTimeout(browser, 90*time.Second)
	defer cancelTab()
	// ?token= once: the view sets its cookie and redirects to the page.
	if err := chromedp.Do(tab,
		chromedp.Navigate(srv.URL+"/?token="+token),
		chromedp.WaitVisible(chromedp.ID("live")),
		chromedp.Poll[chromedp.Void](`document.getElementById("conn").textContent === "live"`, chromedp.WithPollingTimeout(10*time.Second)),
		// Records every Pod state the page shows, and marks the document:
		// a reload would lose both.
		chromedp.Evaluate[chromedp.Void](`window.seen = {}; window.notReloaded = true;
			new MutationObserver(() => document.querySelectorAll(".grid .pod").forEach(p => { window.seen[p.dataset.state] = true; }))
				.observe(document.getElementById("live"), {childList: true, subtree: true}); true`),
	); err != nil {
		conn, _ := chromedp.Run(tab, chromedp.Text(chromedp.ID("conn")))
		t.Fatalf("open the view (connection %q): %v", conn, err)
	}
	if strings.Contains(tabURL(t, tab), "token") {
		t.Errorf("the address still holds the token: %s", tabURL(t, tab))
	}

	// The rollout waits in its first batch report until the page showed
	// it and the snapshot without JavaScript was taken: the test then
	// sees a rollout in progress for certain, not a race with its end.
	firstBatch, snapshotDone := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var pulls atomic.Int32
	opts := inplace.DefaultOptions()
	opts.Grace = time.Second // long enough to see Pods drain
	// The page is fed as refit run feeds it: the reconciler's teller turns
	// the engine's reports (pre-pull, start, batches, end) into events.
	progress, result := reconcile.RolloutTeller(viewSink(func(e story.Event) {
		view.Emit(e)
		if e.Kind == story.Pull {
			pulls.Add(1)
		}
		if e.Kind == story.Batch {
			once.Do(func() { close(firstBatch); <-snapshotDone })
		}
	}), ns, change)
	opts.Progress = progress
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	done := make(chan inplace.Result, 1)
	go func() {
		defer close(done)
		res, err := newEngine(t).Rollout(ctx, change, opts)
		if err != nil {
			t.Errorf("rollout: %v", err)
			return
		}
		result(res)
		done <- res
	}()

	select {
	case <-firstBatch:
	case <-ctx.Done():
		t.Fatal("no batch reported by the rollout")
	}
	// The rollout holds still meanwhile: the wait is only for the event to
	// reach the page, which takes long on a loaded machine (two e2e shards).
	_, err := chromedp.Run(tab, chromedp.Poll[chromedp.Void](`document.querySelectorAll(".grid .pod.restarting, .grid .pod.draining").length > 0`,
		chromedp.WithPollingTimeout(30*time.Second)))
	if err != nil {
		close(snapshotDone)
		t.Fatalf("the page did not show the first batch: %v", err)
	}
	live, err := chromedp.Run(tab, chromedp.Evaluate[int](`document.querySelectorAll(".grid .pod").length`))
	if err != nil {
		close(snapshotDone)
		t.Fatal(err)
	}
	screenshot(t, tab, "view-rollout.png")
	staticGrid := noScriptSnapshot(t, browser, srv.URL)
	close(snapshotDone)
	if live != 6 || !strings.Contains(staticGrid, `data-pod="web-`) || strings.Count(staticGrid, `class="pod `) != 6 {
		t.Errorf("grid: %d Pods live; without JavaScript the page shows %d Pods, want 6 in both", live, strings.Count(staticGrid, `class="pod `))
	}

	res, ok := <-done
	if !ok {
		t.FailNow()
	}
	if pulls.Load() == 0 {
		t.Error("the rollout reported no pre-pull of its new tag")
	}
	if res.Outcome != inplace.Succeeded {
		t.Fatalf("rollout: %s (%s)", res.Outcome, res.Reason)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.CSS(`#recent tr.ended[data-outcome="Succeeded"]`))); err != nil {
		t.Fatalf("the page did not show the rollout's end: %v", err)
	}
	ended, err := chromedp.Run(tab, chromedp.Text(chromedp.CSS(`#recent tr.ended`)))
	if err != nil {
		t.Fatal(err)
	}
	seen, err := chromedp.Run(tab, chromedp.Evaluate[map[string]bool](`window.seen`))
	if err != nil {
		t.Fatal(err)
	}
	notReloaded, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.notReloaded === true`))
	if err != nil {
		t.Fatal(err)
	}
	screenshot(t, tab, "view-ended.png")
	t.Logf("states the page showed: %v; ended row: %q", seen, ended)
	if !seen["old"] || !seen["new"] || !(seen["draining"] || seen["restarting"]) {
		t.Errorf("the page showed Pod states %v, want old, draining or restarting, and new", seen)
	}
	if !notReloaded {
		t.Error("the page reloaded")
	}
	if !strings.Contains(ended, "6/6") || !strings.Contains(ended, "Succeeded") || !regexp.MustCompile(`\t\d+\.\d\t`).MatchString(ended) {
		t.Errorf("ended row %q, want Succeeded with 6/6 Pods and the requests per Pod", ended)
	}
	if s := noScriptSnapshot(t, browser, srv.URL); !strings.Contains(s, `data-outcome="Succeeded"`) || strings.Contains(s, `data-pod=`) {
		t.Errorf("without JavaScript after the end, the page is not the snapshot of the ended rollout:\n%s", s)
	}
}

// viewSink is a story.Sink of a function.
type viewSink func(story.Event)

func (f viewSink) Emit(e story.Event) { f(e) }

// findChromium returns Debian's Chromium, installing it when missing and
// this test runs as root (as make browser does); it skips only when it is
// neither there nor installable.
func findChromium(t *testing.T) string {
	t.Helper()
	const path = "/usr/bin/chromium"
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if os.Geteuid() == 0 {
		if out, err := exec.Command("apt-get", "install", "-y", "-qq", "chromium").CombinedOutput(); err != nil {
			t.Logf("apt-get install chromium: %v\n%s", err, out)
		}
		if _, err := os.Stat(path); err == nil {
			return path
		}
	}
	t.Skipf("%s is missing and could not be installed (make browser installs it as root)", path)
	return ""
}

// startChromium starts headless Chromium with a fresh profile; it is
// stopped at the end of the test.
func startChromium(t *testing.T, path string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(1200, 900),
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return browser
}

// noScriptSnapshot opens the page in a new tab with JavaScript disabled
// and returns its live part: what the server rendered, nothing else.
func noScriptSnapshot(t *testing.T, browser context.Context, url string) string {
	t.Helper()
	tab, cancel := chromedp.NewContext(browser)
	defer cancel()
	// The tab's first action opens it, without a timeout: a timeout on
	// that call would close the tab when it passes.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	tab, cancelT := context.WithTimeout(tab, 20*time.Second)
	defer cancelT()
	noScript := chromedp.Func(func(ctx context.Context, target *chromedp.Target) error {
		_, err := cdp.Call(ctx, target, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
		return err
	})
	if err := chromedp.Do(tab, noScript, chromedp.Navigate(url+"/"), chromedp.WaitReady(chromedp.ID("live"))); err != nil {
		t.Fatalf("open the view without JavaScript: %v", err)
	}
	html, err := chromedp.Run(tab, chromedp.OuterHTML(chromedp.ID("live")))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("conn")))
	if err != nil {
		t.Fatal(err)
	}
	if conn != "snapshot" {
		t.Errorf("without JavaScript the page says %q, want snapshot (did a script run?)", conn)
	}
	return html
}

func tabURL(t *testing.T, tab context.Context) string {
	t.Helper()
	u, err := chromedp.Run(tab, chromedp.Location())
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(tab, chromedp.FullScreenshot(100)) // 100: PNG; below, JPEG
	if err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dir := os.Getenv("REFIT_ARTIFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	}
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// TestViewInBrowserOfRefitRun opens the view that refit run serves on its
// --listen address, fed by the service's own story: the app's commit
// shows, a push rolls out in place on the page (Pods change state, the
// rollout ends under "Last rollouts"), and without JavaScript the page is
// the snapshot.
func TestViewInBrowserOfRefitRun(t *testing.T) {
	chromium := findChromium(t)
	ns := namespace(t)
	git := gitserver.New(t, gitserver.DefaultOptions())
	repo := git.NewRepo(t, "shop")
	repo.Commit(appFiles(ns, "shop:1.0", 6), "shop 1.0")
	hookSecret := "s3cret-hook-0123456789"
	cfgFile := writeTemp(t, fmt.Sprintf(`apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: shop
  source: {url: %s, usernameFile: %s, passwordFile: %s}
  path: deploy
  interval: 30s
  namespace: %s
  timeout: 1m
  webhook: {provider: gitea, secretFile: %s}
`, repo.HTTPURL(), writeTemp(t, git.Username()), writeTemp(t, git.Password()), ns, writeTemp(t, hookSecret)))
	const viewToken = "view-token-0123456789"
	svc := startService(t, nil, "--config", cfgFile, "--grace", "1s", "--view-token-file", writeTemp(t, viewToken+"\n"))
	waitFor(t, time.Minute, "6 pods on shop:1.0", func(ctx context.Context) bool { return allPodsOn(ctx, ns, "shop:1.0", 6) })

	url := "http://" + svc.addr
	// --view-token-file protects the view; the webhooks stay as they were.
	resp, err := http.Get(url + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET / without the view's token: %s, want 401 Unauthorized", resp.Status)
	}
	browser := startChromium(t, chromium)
	tab, cancelTab := context.WithTimeout(browser, 90*time.Second)
	defer cancelTab()
	if err := chromedp.Do(tab,
		chromedp.Navigate(url+"/?token="+viewToken),
		chromedp.Poll[chromedp.Void](`document.getElementById("conn").textContent === "live"`, chromedp.WithPollingTimeout(10*time.Second)),
		chromedp.Poll[chromedp.Void](`[...document.querySelectorAll("#apps tr.app")].some(r => r.textContent.includes("shop 1.0"))`,
			chromedp.WithPollingTimeout(30*time.Second)),
		chromedp.Evaluate[chromedp.Void](`window.seen = {}; window.notReloaded = true;
			new MutationObserver(() => document.querySelectorAll(".grid .pod").forEach(p => { window.seen[p.dataset.state] = true; }))
				.observe(document.getElementById("live"), {childList: true, subtree: true}); true`),
	); err != nil {
		t.Fatalf("open the view of refit run with its app on shop 1.0: %v", err)
	}

	repo.Commit(appFiles(ns, "shop:1.1", 6), "shop 1.1")
	sendGiteaHook(t, svc.addr, "shop", hookSecret, repo.HTTPURL())
	if err := chromedp.Do(tab, chromedp.Poll[chromedp.Void](`document.querySelectorAll(".grid .pod.restarting, .grid .pod.draining, .grid .pod.new").length > 0`,
		chromedp.WithPollingTimeout(30*time.Second))); err != nil {
		t.Fatalf("the page did not show the rollout in progress: %v", err)
	}
	screenshot(t, tab, "run-view-rollout.png")
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.CSS(`#recent tr.ended[data-outcome="Succeeded"]`))); err != nil {
		t.Fatalf("the page did not show the rollout's end: %v", err)
	}
	screenshot(t, tab, "run-view-ended.png")
	seen, err := chromedp.Run(tab, chromedp.Evaluate[map[string]bool](`window.seen`))
	if err != nil {
		t.Fatal(err)
	}
	notReloaded, err := chromedp.Run(tab, chromedp.Evaluate[bool](`window.notReloaded === true`))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("states the page showed: %v", seen)
	if !seen["new"] || !(seen["old"] || seen["draining"] || seen["restarting"]) || !notReloaded {
		t.Errorf("the page showed Pod states %v (not reloaded: %v), want Pods changing to new without a reload", seen, notReloaded)
	}
	if s := noScriptSnapshot(t, browser, url); !strings.Contains(s, "shop 1.1") || !strings.Contains(s, `data-outcome="Succeeded"`) {
		t.Errorf("without JavaScript the page is not the snapshot of the app on shop 1.1 and its rollout:\n%s", s)
	}
}
