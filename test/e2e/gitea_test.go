//go:build e2e

package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/status"
	"github.com/refit-gitops/refit/test/gitea"
)

// giteaServer starts a Gitea for one test and stops it when the test ends,
// failed or not. The first run in a fresh cache builds Gitea (minutes).
func giteaServer(t *testing.T) *gitea.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	opts := gitea.DefaultOptions()
	opts.Log = os.Stderr
	start := time.Now()
	srv, err := gitea.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start gitea: %v", err)
	}
	t.Logf("gitea %s at %s, started in %s", gitea.Version, srv.URL, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gitea log (end):\n%s", srv.LogTail())
		}
		if err := srv.Close(); err != nil {
			t.Errorf("close gitea: %v", err)
		}
	})
	return srv
}

func giteaRepo(t *testing.T, srv *gitea.Server, name string, files map[string]string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.CreateRepo(ctx, name); err != nil {
		t.Fatal(err)
	}
	sha, err := srv.Commit(ctx, name, files, "deploy v1")
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

// giteaManifest is a one-object app at version v.
func giteaManifest(v string) map[string]string {
	return map[string]string{
		"deploy/app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  version: " + v + "\n",
	}
}

// TestGiteaCommitStatus reports through the status package to a real Gitea
// with a token scoped to write:repository only, and reads the statuses back.
func TestGiteaCommitStatus(t *testing.T) {
	srv := giteaServer(t)
	sha := giteaRepo(t, srv, "app", giteaManifest("v1"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	reporter, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.RepoURL("app"), Token: srv.Token()})
	if err != nil {
		t.Fatal(err)
	}
	long := "rollout failed: " + strings.Repeat("web-0 ImagePullBackOff for registry.example.com/app:v2; ", 10)
	steps := []status.Status{
		{Commit: sha, State: status.Pending, Context: "refit/app", Description: "applying deploy v1", TargetURL: "https://refit.example.com/apps/app"},
		{Commit: sha, State: status.Success, Context: "refit/app", Description: "applied: 1 object, 0 in place"},
		{Commit: sha, State: status.Failure, Context: "refit/other", Description: long},
		{Commit: sha, State: status.Error, Context: "refit/third", Description: "kube-apiserver unreachable"},
	}
	for _, st := range steps {
		if err := reporter.Report(ctx, st); err != nil {
			t.Fatalf("report %s %s: %v", st.Context, st.State, err)
		}
	}

	got, err := srv.Statuses(ctx, "app", sha)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(steps) {
		t.Fatalf("gitea lists %d statuses on %s, want %d: %+v", len(got), sha, len(steps), got)
	}
	for i, want := range steps {
		wantDesc := status.Truncate(want.Description, status.MaxDescription)
		g := got[i]
		if g.State != string(want.State) || g.Context != want.Context || g.Description != wantDesc || g.TargetURL != want.TargetURL {
			t.Errorf("status %d = {%s %s %q %q}, want {%s %s %q %q}", i, g.State, g.Context, g.Description, g.TargetURL,
				want.State, want.Context, wantDesc, want.TargetURL)
		}
		if g.Creator.Login != srv.Admin() {
			t.Errorf("status %d created by %q, want %q", i, g.Creator.Login, srv.Admin())
		}
	}
	failure := got[2].Description
	if n := len([]rune(failure)); n != status.MaxDescription || !strings.HasSuffix(failure, "…") || !strings.HasPrefix(failure, "rollout failed: web-0") {
		t.Errorf("long description stored as %d characters %q, want %d ending in …", n, failure, status.MaxDescription)
	}

	t.Run("ssh repository URL with an API URL", func(t *testing.T) {
		// refit may clone over SSH while the API is elsewhere: the owner and
		// repository come from the clone URL, the address from APIURL.
		r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: "git@gitea.internal:" + srv.Admin() + "/app.git",
			APIURL: srv.URL + "/", Token: srv.Token()})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Report(ctx, status.Status{Commit: sha, State: status.Success, Context: "refit/ssh"}); err != nil {
			t.Fatal(err)
		}
		list, err := srv.Statuses(ctx, "app", sha)
		if err != nil {
			t.Fatal(err)
		}
		if last := list[len(list)-1]; last.Context != "refit/ssh" || last.State != "success" {
			t.Errorf("last status = %s %s, want refit/ssh success", last.Context, last.State)
		}
	})

	t.Run("refusals name provider, repository and status without the token", func(t *testing.T) {
		cases := []struct {
			name, token, sha string
			code             int
		}{
			{"wrong token", "0123456789abcdef0123456789abcdef01234567", sha, http.StatusUnauthorized},
			// Gitea v1.26 answers a commit it does not have with 500
			// "object does not exist"; status must not call that transient.
			{"unknown commit", srv.Token(), strings.Repeat("0", 40), http.StatusInternalServerError},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.RepoURL("app"), Token: tc.token})
				if err != nil {
					t.Fatal(err)
				}
				err = r.Report(ctx, status.Status{Commit: tc.sha, State: status.Pending, Context: "refit/app"})
				var httpErr *status.HTTPError
				if !errors.As(err, &httpErr) {
					t.Fatalf("Report = %v, want an *status.HTTPError", err)
				}
				if httpErr.StatusCode != tc.code {
					t.Errorf("HTTP %d, want %d: %v", httpErr.StatusCode, tc.code, err)
				}
				if httpErr.Transient {
					t.Errorf("%v is marked transient", err)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "gitea "+srv.Admin()+"/app@") || strings.Contains(msg, tc.token) {
					t.Errorf("error %q should start with the provider and repository and not carry the token", msg)
				}
				t.Logf("%s: %v", tc.name, err)
			})
		}
	})
}

// giteaDelivery is one webhook request as the test's receiver saw it.
type giteaDelivery struct {
	header http.Header
	body   []byte
	code   int
}

// TestGiteaPushWebhook pushes to a real Gitea whose webhook points at
// refit's own source.Receiver on loopback, and checks each delivery: its
// signature, its payload, and that the receiver accepts it and fires.
func TestGiteaPushWebhook(t *testing.T) {
	srv := giteaServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const secret = "hook-s3cret-0123456789"
	trigger := source.NewTrigger()
	receiver, err := source.NewReceiver(source.DefaultReceiverOptions(), source.Hook{
		Path: "/hooks/gitea", Provider: source.Gitea, Secret: secret, RepoURL: srv.RepoURL("hooked"), Trigger: trigger,
	})
	if err != nil {
		t.Fatal(err)
	}
	deliveries := make(chan giteaDelivery, 10)
	hookSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		rec := httptest.NewRecorder()
		receiver.ServeHTTP(rec, r)
		deliveries <- giteaDelivery{header: r.Header.Clone(), body: body, code: rec.Code}
		w.WriteHeader(rec.Code)
	}))
	defer hookSrv.Close()
	if !strings.HasPrefix(hookSrv.URL, "http://127.0.0.1:") {
		t.Fatalf("httptest server at %s, want 127.0.0.1", hookSrv.URL)
	}

	if err := srv.CreateRepo(ctx, "hooked"); err != nil {
		t.Fatal(err)
	}
	hook, err := srv.AddWebhook(ctx, "hooked", hookSrv.URL+"/hooks/gitea", secret)
	if err != nil {
		t.Fatal(err)
	}
	if hook.Type != "gitea" || !hook.Active || hook.Config["content_type"] != "json" {
		t.Errorf("webhook = %+v, want an active gitea hook with JSON content", hook)
	}

	// The first push creates main (before is the zero SHA), the second
	// moves it.
	before := strings.Repeat("0", 40)
	for _, version := range []string{"v1", "v2"} {
		pushed := time.Now()
		sha, err := srv.Commit(ctx, "hooked", giteaManifest(version), "deploy "+version)
		if err != nil {
			t.Fatal(err)
		}
		d := giteaAwaitDelivery(t, deliveries, sha)
		t.Logf("push %s: delivery %s arrived %s after the push", version, d.header.Get("X-Gitea-Delivery"), time.Since(pushed).Round(time.Millisecond))
		giteaCheckDelivery(t, d, secret, srv, before, sha)

		// refit's receiver accepts the real delivery and asks for a poll.
		if d.code != http.StatusAccepted {
			t.Errorf("push %s: source.Receiver answered the delivery with %d, want %d", version, d.code, http.StatusAccepted)
		}
		select {
		case <-trigger.C():
		default:
			t.Errorf("push %s: source.Receiver accepted the delivery but did not fire the trigger", version)
		}
		before = sha
	}
}

// giteaAwaitDelivery waits for the push delivery whose "after" is sha.
// Gitea queues push events, so a delivery for an earlier push may come
// first; those are skipped.
func giteaAwaitDelivery(t *testing.T, deliveries <-chan giteaDelivery, sha string) giteaDelivery {
	t.Helper()
	deadline := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case d := <-deliveries:
			var p struct {
				After string `json:"after"`
			}
			_ = json.Unmarshal(d.body, &p)
			if p.After == sha {
				return d
			}
			seen = append(seen, p.After)
		case <-deadline:
			t.Fatalf("no webhook delivery for %s within 30s of the push (saw deliveries for %v)", sha, seen)
		}
	}
}

func giteaCheckDelivery(t *testing.T, d giteaDelivery, secret string, srv *gitea.Server, before, after string) {
	t.Helper()
	if ev := d.header.Get("X-Gitea-Event"); ev != "push" {
		t.Errorf("X-Gitea-Event = %q, want push", ev)
	}
	if ct := d.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(d.body)
	want := hex.EncodeToString(mac.Sum(nil))
	if sig := d.header.Get("X-Gitea-Signature"); !hmac.Equal([]byte(sig), []byte(want)) {
		t.Errorf("X-Gitea-Signature = %q, want HMAC-SHA256 of the body %q", sig, want)
	}
	var payload struct {
		Ref        string `json:"ref"`
		Before     string `json:"before"`
		After      string `json:"after"`
		Repository struct {
			CloneURL string `json:"clone_url"`
			FullName string `json:"full_name"`
		} `json:"repository"`
	}
	if err := json.Unmarshal(d.body, &payload); err != nil {
		t.Fatalf("payload is not JSON: %v", err)
	}
	wantRepo := srv.Admin() + "/hooked"
	if payload.Ref != "refs/heads/main" || payload.Before != before || payload.After != after ||
		payload.Repository.CloneURL != srv.RepoURL("hooked") || payload.Repository.FullName != wantRepo {
		t.Errorf("payload: ref %s %s..%s repository %s %s; want refs/heads/main %s..%s %s %s", payload.Ref, payload.Before,
			payload.After, payload.Repository.FullName, payload.Repository.CloneURL, before, after, wantRepo, srv.RepoURL("hooked"))
	}
}

// TestGiteaCloseStopsEverything checks that Close ends the Gitea process
// and removes its data.
func TestGiteaCloseStopsEverything(t *testing.T) {
	srv := giteaServer(t)
	pid, dir := srv.Pid(), srv.Dir()
	if pid == 0 {
		t.Fatal("no gitea pid")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// A zombie has no stat once reaped; Close waits for the reaping.
		t.Errorf("gitea (pid %d) still runs after Close", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("gitea data %s still exists after Close (%v)", dir, err)
	}
}
