package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/refit-gitops/refit/diff"
	"github.com/refit-gitops/refit/story"
	"github.com/refit-gitops/refit/web"
)

var (
	t0  = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	dep = diff.Ref{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"}
)

func pods(states ...story.PodState) []story.Pod {
	var ps []story.Pod
	for i, s := range states {
		ps = append(ps, story.Pod{Name: "web-" + string(rune('a'+i)), State: s})
	}
	return ps
}

// rollout is the events of a sync with a three-Pod rollout, up to the
// second batch.
func rollout() []story.Event {
	return []story.Event{
		{Time: t0, Kind: story.SyncStarted, App: "shop", Source: "https://git.example/shop.git", Revision: "0123456789abcdef",
			Message: "shop: web on nginx:1.28\n\nbody", Author: "Ada <ada@example.com>"},
		{Time: t0, Kind: story.RolloutStarted, App: "shop", Workload: dep, Pods: 3, Bound: 1,
			Images:    []story.Image{{Container: "web", From: "nginx:1.27", To: "nginx:1.28"}},
			PodStates: pods(story.PodOld, story.PodOld, story.PodOld)},
		{Time: t0.Add(time.Second), Kind: story.Batch, App: "shop", Workload: dep, Batch: 1, Updated: 0, Unavailable: 1,
			Patched: []string{"web-a"}, PodStates: pods(story.PodRestarting, story.PodOld, story.PodOld)},
		{Time: t0.Add(2 * time.Second), Kind: story.Batch, App: "shop", Workload: dep, Batch: 2, Updated: 1, Unavailable: 1,
			Draining: []string{"web-b"}, PodStates: pods(story.PodNew, story.PodDraining, story.PodOld)},
	}
}

func ended() []story.Event {
	return []story.Event{
		{Time: t0.Add(5 * time.Second), Kind: story.RolloutEnded, App: "shop", Workload: dep, Outcome: "Succeeded",
			Pods: 3, Updated: 3, Duration: 5 * time.Second, MostUnavailable: 1, Cost: &story.Cost{Requests: 12, RequestsPerPod: 4}},
		{Time: t0.Add(6 * time.Second), Kind: story.SyncEnded, App: "shop", Revision: "0123456789abcdef", Outcome: "Applied"},
	}
}

func get(t *testing.T, h http.Handler, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPageRendersTheEvents(t *testing.T) {
	v := web.New(web.DefaultOptions())
	for _, e := range rollout() {
		v.Emit(e)
	}
	body := get(t, v, "/").Body.String()
	for _, want := range []string{
		`<td>shop</td>`, `https://git.example/shop.git`, `<code>01234567</code>`, `shop: web on nginx:1.28</td>`,
		`Ada &lt;ada@example.com&gt;`, `syncing…`,
		`Deployment.apps/shop/web`, `nginx:1.27 → nginx:1.28`, `batch <b class="batch">2</b>`,
		`<b class="updated">1</b>/3 updated`, `of bound <b class="bound">1</b>`,
		`class="pod new" data-pod="web-a"`, `class="pod draining window" data-pod="web-b"`, `class="pod old" data-pod="web-c"`,
		`href="assets/view.css"`, `src="assets/view.js"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "\n\nbody") || strings.Contains(body, "http://") && !strings.Contains(body, "https://git") {
		t.Errorf("page shows more than the commit's first line")
	}

	for _, e := range ended() {
		v.Emit(e)
	}
	body = get(t, v, "/").Body.String()
	for _, want := range []string{`Applied`, `data-outcome="Succeeded"`, `<td>5s</td>`, `<td>3/3</td>`, `1 (bound 1)`, `<td>4.0</td>`} {
		if !strings.Contains(body, want) {
			t.Errorf("page after the end lacks %q", want)
		}
	}
	if strings.Contains(body, `data-pod=`) || strings.Contains(body, "syncing…") {
		t.Errorf("page after the end still shows the rollout in progress or the sync")
	}
}

func TestStateKeepsTheLastRollouts(t *testing.T) {
	opts := web.DefaultOptions()
	opts.Recent = 2
	v := web.New(opts)
	for i := range 5 {
		ref := dep
		ref.Name = string(rune('a' + i))
		v.Emit(story.Event{Kind: story.RolloutStarted, App: "shop", Workload: ref, Pods: 1, PodStates: pods(story.PodOld)})
		v.Emit(story.Event{Kind: story.PodFailed, App: "shop", Workload: ref, Pod: "web-a", Reason: "ErrImagePull"})
		if i == 4 {
			break
		}
		v.Emit(story.Event{Kind: story.RolloutEnded, App: "shop", Workload: ref, Outcome: "Failed"})
	}
	var st web.State
	if err := json.Unmarshal(get(t, v, "/state.json").Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Recent) != 2 || st.Recent[0].Workload != "Deployment.apps/shop/d" || st.Recent[1].Workload != "Deployment.apps/shop/c" {
		t.Errorf("recent: %+v, want d then c", st.Recent)
	}
	if len(st.Active) != 1 || st.Active[0].Pods[0].State != story.PodFailedRun || st.Active[0].Failures[0].Reason != "ErrImagePull" {
		t.Errorf("active: %+v, want e with web-a failed", st.Active)
	}
}

func TestEventsStreamTheState(t *testing.T) {
	v := web.New(web.DefaultOptions())
	srv := httptest.NewServer(v)
	defer srv.Close()
	// The service's server has short timeouts for webhooks; the stream
	// must outlive them.
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(nil, 1<<20)
		var ev strings.Builder
		for sc.Scan() {
			if sc.Text() == "" {
				events <- ev.String()
				ev.Reset()
				continue
			}
			ev.WriteString(sc.Text() + "\n")
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case e, ok := <-events:
			if !ok {
				t.Fatalf("stream ended, waiting for %s", what)
			}
			return e
		case <-ctx.Done():
			t.Fatalf("no event: %s", what)
		}
		return ""
	}
	if e := next("the first state"); !strings.HasPrefix(e, "event: state\ndata: ") || !strings.Contains(e, "No app has synced yet") {
		t.Fatalf("first event: %q", e)
	}
	time.Sleep(500 * time.Millisecond) // past the server's read and write timeouts
	for _, e := range rollout() {
		v.Emit(e)
	}
	var last string
	for !strings.Contains(last, `class="pod draining window" data-pod="web-b"`) {
		last = next("the second batch")
	}
	for _, line := range strings.Split(strings.TrimSpace(last), "\n") {
		if !strings.HasPrefix(line, "event: ") && !strings.HasPrefix(line, "data: ") {
			t.Errorf("line %q is neither event nor data", line)
		}
	}
}

func TestEventsCapsClients(t *testing.T) {
	opts := web.DefaultOptions()
	opts.Clients = 1
	v := web.New(opts)
	srv := httptest.NewServer(v)
	defer srv.Close()
	first, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Body.Close()
	second, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("second viewer: %s, want 503", second.Status)
	}
}

func TestToken(t *testing.T) {
	opts := web.DefaultOptions()
	opts.Token = "s3cret-token"
	v := web.New(opts)
	for _, tc := range []struct {
		name   string
		target string
		hdr    []string
		want   int
	}{
		{"none", "/", nil, http.StatusUnauthorized},
		{"events without", "/events", nil, http.StatusUnauthorized},
		{"state without", "/state.json", nil, http.StatusUnauthorized},
		{"asset without", "/assets/view.js", nil, http.StatusUnauthorized},
		{"wrong bearer", "/", []string{"Authorization", "Bearer nope"}, http.StatusUnauthorized},
		{"wrong query", "/?token=nope", nil, http.StatusUnauthorized},
		{"bearer", "/state.json", []string{"Authorization", "Bearer s3cret-token"}, http.StatusOK},
		{"cookie", "/", []string{"Cookie", "refit_view=s3cret-token"}, http.StatusOK},
		{"wrong cookie", "/", []string{"Cookie", "refit_view=nope"}, http.StatusUnauthorized},
		{"query once", "/?token=s3cret-token", nil, http.StatusSeeOther},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := get(t, v, tc.target, tc.hdr...)
			if rec.Code != tc.want {
				t.Fatalf("%s: %d, want %d", tc.target, rec.Code, tc.want)
			}
			if rec.Code == http.StatusUnauthorized && strings.Contains(rec.Body.String(), "s3cret") {
				t.Errorf("401 body shows the token")
			}
			if rec.Code == http.StatusSeeOther {
				if loc := rec.Header().Get("Location"); strings.Contains(loc, "token") {
					t.Errorf("redirect to %q keeps the token", loc)
				}
				c := rec.Result().Cookies()
				if len(c) != 1 || c[0].Value != "s3cret-token" || !c[0].HttpOnly || c[0].SameSite != http.SameSiteStrictMode {
					t.Errorf("cookie %+v", c)
				}
			}
		})
	}
}

func TestReadOnlyAndAssets(t *testing.T) {
	v := web.New(web.DefaultOptions())
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x"))
	rec := httptest.NewRecorder()
	v.ServeHTTP(rec, req)
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /: %d, want 405", rec.Code)
	}
	for path, want := range map[string]int{"/assets/view.js": 200, "/assets/view.css": 200, "/assets/page.html": 404, "/nothing": 404} {
		rec := get(t, v, path)
		if rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
		if want == 200 {
			if b, _ := io.ReadAll(rec.Body); len(b) == 0 {
				t.Errorf("%s: empty", path)
			}
		}
	}
}
