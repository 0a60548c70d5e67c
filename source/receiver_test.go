package source_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

func sign(secret, body string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil))
}

func pending(tr *source.Trigger) bool {
	select {
	case <-tr.C():
		return true
	default:
		return false
	}
}

func TestReceiver(t *testing.T) {
	const secret = "hook-secret-0123456789"
	ghPush := `{"ref":"refs/heads/main","repository":{"clone_url":"https://github.com/acme/app.git","ssh_url":"git@github.com:acme/app.git"}}`
	glPush := `{"object_kind":"push","project":{"git_http_url":"https://gitlab.com/acme/app.git","git_ssh_url":"git@gitlab.com:acme/app.git"}}`
	giteaPush := `{"ref":"refs/heads/main","repository":{"clone_url":"https://gitea.example.com/acme/app.git"}}`
	giteaWeb := `{"ref":"refs/heads/main","repository":{"html_url":"https://gitea.example.com/Acme/App"}}`
	ghHomepage := `{"repository":{"clone_url":"https://github.com/evil/app.git","homepage":"https://github.com/acme/app"}}`
	ghAPIURL := `{"repository":{"url":"https://github.com/acme/app"}}`
	glOtherHost := `{"project":{"git_http_url":"https://gitlab.evil.example/acme/app.git","web_url":"https://gitlab.evil.example/acme/app"}}`

	app, other, gl, gitea, generic := source.NewTrigger(), source.NewTrigger(), source.NewTrigger(), source.NewTrigger(), source.NewTrigger()
	opts := source.DefaultReceiverOptions()
	opts.MaxBody = 4096
	recv, err := source.NewReceiver(opts,
		source.Hook{Path: "/hooks/github", Provider: source.GitHub, Secret: secret, RepoURL: "ssh://git@github.com/acme/app", Trigger: app},
		source.Hook{Path: "/hooks/github", Provider: source.GitHub, Secret: secret, RepoURL: "https://github.com/acme/other.git", Trigger: other},
		source.Hook{Path: "/hooks/gitlab", Provider: source.GitLab, Secret: secret, RepoURL: "https://gitlab.com/acme/app", Trigger: gl},
		source.Hook{Path: "/hooks/gitea", Provider: source.Gitea, Secret: secret, RepoURL: "git@gitea.example.com:acme/app.git", Trigger: gitea},
		source.Hook{Path: "/hooks/app", Provider: source.Generic, Secret: secret, Trigger: generic},
	)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		method  string
		path    string
		body    string
		headers map[string]string
		status  int
		fires   *source.Trigger
	}{
		{"github signed", "POST", "/hooks/github", ghPush, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, ghPush), "X-GitHub-Delivery": "d1"}, 202, app},
		{"github replayed delivery", "POST", "/hooks/github", ghPush, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, ghPush), "X-GitHub-Delivery": "d1"}, 200, nil},
		{"github ping", "POST", "/hooks/github", ghPush, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, ghPush), "X-GitHub-Event": "ping"}, 200, nil},
		{"github wrong secret", "POST", "/hooks/github", ghPush, map[string]string{"X-Hub-Signature-256": "sha256=" + sign("nope", ghPush)}, 403, nil},
		{"github body changed", "POST", "/hooks/github", ghPush + " ", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, ghPush)}, 403, nil},
		{"github unsigned", "POST", "/hooks/github", ghPush, nil, 401, nil},
		{"github malformed signature", "POST", "/hooks/github", ghPush, map[string]string{"X-Hub-Signature-256": "sha1=abc"}, 400, nil},
		{"github non-hex signature", "POST", "/hooks/github", ghPush, map[string]string{"X-Hub-Signature-256": "sha256=zz"}, 400, nil},
		{"github malformed payload", "POST", "/hooks/github", "{", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, "{")}, 400, nil},
		{"github other repository", "POST", "/hooks/github", strings.Replace(ghPush, "acme/app", "acme/unknown", 2), map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, strings.Replace(ghPush, "acme/app", "acme/unknown", 2))}, 200, nil},
		{"gitlab token", "POST", "/hooks/gitlab", glPush, map[string]string{"X-Gitlab-Token": secret, "X-Gitlab-Event-UUID": "u1"}, 202, gl},
		{"gitlab wrong token", "POST", "/hooks/gitlab", glPush, map[string]string{"X-Gitlab-Token": "nope"}, 403, nil},
		{"gitlab no token", "POST", "/hooks/gitlab", glPush, nil, 401, nil},
		{"gitea signed", "POST", "/hooks/gitea", giteaPush, map[string]string{"X-Gitea-Signature": sign(secret, giteaPush), "X-Gitea-Delivery": "g1"}, 202, gitea},
		{"gitea replayed", "POST", "/hooks/gitea", giteaPush, map[string]string{"X-Gitea-Signature": sign(secret, giteaPush), "X-Gitea-Delivery": "g1"}, 200, nil},
		{"gitea wrong signature", "POST", "/hooks/gitea", giteaPush, map[string]string{"X-Gitea-Signature": sign("nope", giteaPush)}, 403, nil},
		{"generic bearer", "POST", "/hooks/app", "", map[string]string{"Authorization": "Bearer " + secret}, 202, generic},
		{"generic wrong token", "POST", "/hooks/app", "", map[string]string{"Authorization": "Bearer nope"}, 403, nil},
		{"generic basic auth", "POST", "/hooks/app", "", map[string]string{"Authorization": "Basic eDp5"}, 400, nil},
		{"generic unsigned", "POST", "/hooks/app", "", nil, 401, nil},
		{"github payload naming no repository", "POST", "/hooks/github", `{"ref":"refs/heads/main"}`, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, `{"ref":"refs/heads/main"}`)}, 200, nil},
		{"github empty body", "POST", "/hooks/github", "", map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, "")}, 200, nil},
		{"github repository as a string", "POST", "/hooks/github", `{"repository":"acme/app"}`, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, `{"repository":"acme/app"}`)}, 400, nil},
		{"github homepage is the owner's, not a clone URL", "POST", "/hooks/github", ghHomepage, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, ghHomepage)}, 200, nil},
		{"github API url is not a clone URL", "POST", "/hooks/github", ghAPIURL, map[string]string{"X-Hub-Signature-256": "sha256=" + sign(secret, ghAPIURL)}, 200, nil},
		{"gitlab project of another host", "POST", "/hooks/gitlab", glOtherHost, map[string]string{"X-Gitlab-Token": secret}, 200, nil},
		{"gitlab payload naming no repository", "POST", "/hooks/gitlab", `{"object_kind":"push"}`, map[string]string{"X-Gitlab-Token": secret}, 200, nil},
		{"gitea web URL matches", "POST", "/hooks/gitea", giteaWeb, map[string]string{"X-Gitea-Signature": sign(secret, giteaWeb)}, 202, gitea},
		{"gitea payload naming no repository", "POST", "/hooks/gitea", `{"ref":"x"}`, map[string]string{"X-Gitea-Signature": sign(secret, `{"ref":"x"}`)}, 200, nil},
		{"generic body naming no repository", "POST", "/hooks/app", `{"ref":"x"}`, map[string]string{"Authorization": "Bearer " + secret}, 200, nil},
		{"generic malformed body", "POST", "/hooks/app", `not json`, map[string]string{"Authorization": "Bearer " + secret}, 400, nil},
		{"oversized", "POST", "/hooks/app", strings.Repeat("x", 5000), map[string]string{"Authorization": "Bearer " + secret}, 413, nil},
		{"get", "GET", "/hooks/app", "", map[string]string{"Authorization": "Bearer " + secret}, 405, nil},
		{"unknown path", "POST", "/hooks/nope", "", map[string]string{"Authorization": "Bearer " + secret}, 404, nil},
	}
	all := []*source.Trigger{app, other, gl, gitea, generic}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			recv.ServeHTTP(rec, req)
			if rec.Code != tc.status {
				t.Errorf("status = %d (%s), want %d", rec.Code, strings.TrimSpace(rec.Body.String()), tc.status)
			}
			for _, tr := range all {
				if got, want := pending(tr), tr == tc.fires; got != want {
					t.Errorf("trigger fired = %v, want %v", got, want)
				}
			}
		})
	}
}

// TestReceiverCoalesces sends a flood of valid hooks: the poller sees one
// pending poll, not hundreds.
func TestReceiverCoalesces(t *testing.T) {
	tr := source.NewTrigger()
	recv, err := source.NewReceiver(source.DefaultReceiverOptions(),
		source.Hook{Path: "/h", Provider: source.Generic, Secret: "s3cret-s3cret-s3cret", Trigger: tr})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	for i := 0; i < 200; i++ {
		req, _ := http.NewRequest("POST", srv.URL+"/h", nil)
		req.Header.Set("Authorization", "Bearer s3cret-s3cret-s3cret")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status = %d", resp.StatusCode)
		}
	}
	polls := 0
	for pending(tr) {
		polls++
	}
	if polls != 1 {
		t.Errorf("%d polls pending after 200 hooks, want 1", polls)
	}
}

func TestReceiverConfig(t *testing.T) {
	tr := source.NewTrigger()
	const s16 = "0123456789abcdef"
	const repo = "https://github.com/acme/app.git"
	for _, tc := range []struct {
		name string
		hook source.Hook
		want string // "" when accepted
	}{
		{"relative path", source.Hook{Path: "h", Provider: source.GitHub, Secret: s16, RepoURL: repo, Trigger: tr}, `hook "h": path must start with /`},
		{"no secret", source.Hook{Path: "/h", Provider: source.GitHub, RepoURL: repo, Trigger: tr}, "hook /h: secret is required"},
		{"15-byte secret", source.Hook{Path: "/h", Provider: source.GitHub, Secret: s16[1:], RepoURL: repo, Trigger: tr}, "hook /h: secret is 15 bytes, want at least 16"},
		{"16-byte secret", source.Hook{Path: "/h", Provider: source.GitHub, Secret: s16, RepoURL: repo, Trigger: tr}, ""},
		{"short generic token", source.Hook{Path: "/h", Provider: source.Generic, Secret: "s3cret", Trigger: tr}, "secret is 6 bytes"},
		{"unknown provider", source.Hook{Path: "/h", Provider: "bitbucket", Secret: s16, RepoURL: repo, Trigger: tr}, `unknown provider "bitbucket"`},
		{"no trigger", source.Hook{Path: "/h", Provider: source.GitHub, Secret: s16, RepoURL: repo}, "trigger is required"},
		{"github without a repository", source.Hook{Path: "/h", Provider: source.GitHub, Secret: s16, Trigger: tr}, "hook /h: repository URL is required"},
		{"gitlab without a repository", source.Hook{Path: "/h", Provider: source.GitLab, Secret: s16, Trigger: tr}, "repository URL is required"},
		{"repository URL naming no repository", source.Hook{Path: "/h", Provider: source.Gitea, Secret: s16, RepoURL: "https://user:pw-xyz@gitea.example.com/", Trigger: tr},
			"hook /h: repository URL https://gitea.example.com/ names no repository"},
		{"generic without a repository", source.Hook{Path: "/h", Provider: source.Generic, Secret: s16, Trigger: tr}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := source.NewReceiver(source.DefaultReceiverOptions(), tc.hook)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("NewReceiver: %v, want it accepted", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("NewReceiver error = %v, want one containing %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "pw-xyz"):
				t.Errorf("error carries a password: %v", err)
			}
		})
	}
}

// TestHookTriggersPoll wires a Receiver to a Poller as the reconcile loop
// will: a signed push hook makes the next poll see the new commit at once.
func TestHookTriggersPoll(t *testing.T) {
	srv := gitserver.New(t, gitserver.Options{})
	repo := srv.NewRepo(t, "app")
	repo.Commit(map[string]string{"a": "1"}, "one")
	p := newPoller(t, repo.HTTPURL(), source.Ref{Branch: "main"}, source.Auth{})
	poll(t, p)

	tr := source.NewTrigger()
	recv, err := source.NewReceiver(source.DefaultReceiverOptions(),
		source.Hook{Path: "/hook", Provider: source.GitHub, Secret: "s3cret-s3cret-s3cret", RepoURL: repo.HTTPURL(), Trigger: tr})
	if err != nil {
		t.Fatal(err)
	}
	sha := repo.Commit(map[string]string{"a": "2"}, "two")
	body := `{"repository":{"clone_url":"` + repo.HTTPURL() + `"}}`
	req := httptest.NewRequest("POST", "/hook", strings.NewReader(body))
	req.Header.Set("X-Hub-Signature-256", "sha256="+sign("s3cret-s3cret-s3cret", body))
	rec := httptest.NewRecorder()
	recv.ServeHTTP(rec, req)
	if rec.Code != http.StatusAccepted {
		t.Fatalf("status = %d", rec.Code)
	}
	select {
	case <-tr.C():
	default:
		t.Fatal("hook did not request a poll")
	}
	if rev := poll(t, p); rev.Commit != sha || !rev.Fetched {
		t.Errorf("poll after hook = %s (fetched %v), want %s", rev.Commit, rev.Fetched, sha)
	}
}
