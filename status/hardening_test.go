package status_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/refit-gitops/refit/status"
)

// allRequests records every request a server receives, headers included.
type allRequests struct {
	mu   sync.Mutex
	seen []*http.Request
}

func (a *allRequests) add(r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.seen = append(a.seen, r.Clone(context.Background()))
}

func (a *allRequests) list() []*http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]*http.Request(nil), a.seen...)
}

// TestReportNeverFollowsARedirect: the API server redirects, to another
// host (localhost instead of 127.0.0.1: Go strips Authorization there but
// forwards GitLab's PRIVATE-TOKEN) or to itself; the reporter follows
// neither, so the target never sees a request, and says where it was sent.
func TestReportNeverFollowsARedirect(t *testing.T) {

	providers := []struct {
		provider status.Provider
		username string
	}{{status.GitHub, ""}, {status.GitLab, ""}, {status.Gitea, ""}, {status.Bitbucket, "refit"}}
	for _, p := range providers {
		for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
			for _, where := range []string{"cross-host", "same-host"} {
				t.Run(string(p.provider)+"/"+where+"/"+http.StatusText(code), func(t *testing.T) {
					var here, elsewhere allRequests
					target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						elsewhere.add(r)
						w.WriteHeader(http.StatusCreated)
					}))
					defer target.Close()
					otherHost := strings.Replace(target.URL, "127.0.0.1", "localhost", 1)
					var api *httptest.Server
					api = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						here.add(r)
						if r.URL.Path == "/moved" {
							w.WriteHeader(http.StatusCreated)
							return
						}
						to := otherHost + "/collect?sig=" + token
						if where == "same-host" {
							to = api.URL + "/moved"
						}
						http.Redirect(w, r, to, code)
					}))
					defer api.Close()
					r, err := status.New(status.Options{Provider: p.provider, RepoURL: "https://git.example.com/acme/app.git",
						APIURL: api.URL, Token: token, Username: p.username})
					if err != nil {
						t.Fatalf("New: %v", err)
					}
					err = r.Report(context.Background(), status.Status{Commit: sha, State: status.Success, Context: "refit/app"})
					for _, req := range elsewhere.list() {
						t.Errorf("redirect target received %s %s with headers %v", req.Method, req.URL, req.Header)
					}
					var httpErr *status.HTTPError
					if !errors.As(err, &httpErr) || httpErr.StatusCode != code || httpErr.Transient {
						t.Fatalf("Report = %v, want a permanent *HTTPError with code %d", err, code)
					}
					if !strings.Contains(err.Error(), "redirected to ") || !strings.Contains(err.Error(), "not followed") {
						t.Errorf("error %q does not say the redirect was not followed", err)
					}
					if strings.Contains(err.Error(), token) {
						t.Errorf("error carries the token: %v", err)
					}
					if n := len(here.list()); n != 1 {
						t.Errorf("API server saw %d requests, want 1 (the redirect not followed)", n)
					}
				})
			}
		}
	}
}

// TestReportCallerClientUntouched: the caller's client keeps its own
// redirect policy; the reporter uses a copy.
func TestReportCallerClientUntouched(t *testing.T) {
	client := &http.Client{}
	if _, err := status.New(status.Options{Provider: status.GitHub, RepoURL: "https://github.com/a/b", Token: token, HTTPClient: client}); err != nil {
		t.Fatal(err)
	}
	if client.CheckRedirect != nil {
		t.Error("New changed the caller's http.Client")
	}
}

// TestNewRefusesPlainHTTP: a token is sent over plain http only to
// loopback, or when the configuration says insecure.
func TestNewRefusesPlainHTTP(t *testing.T) {
	cases := []struct {
		name    string
		opts    status.Options
		wantErr string
	}{
		{"http API URL", status.Options{Provider: status.Gitea, RepoURL: "https://git.example.com/a/b", APIURL: "http://git.example.com"},
			"API URL http://git.example.com: plain http sends the token in clear text"},
		{"http API URL with credentials", status.Options{Provider: status.GitLab, RepoURL: "https://git.example.com/a/b", APIURL: "http://u:s3cret@git.example.com"},
			"API URL http://git.example.com: plain http"},
		{"derived from an http repository URL", status.Options{Provider: status.Gitea, RepoURL: "http://git.example.com/a/b.git"},
			"API URL http://git.example.com: plain http"},
		{"github enterprise over http", status.Options{Provider: status.GitHub, RepoURL: "http://ghe.example.com/a/b"},
			"API URL http://ghe.example.com/api/v3: plain http"},
		{"bitbucket over http", status.Options{Provider: status.Bitbucket, RepoURL: "https://bitbucket.org/a/b", APIURL: "http://10.0.0.1:8080"},
			"API URL http://10.0.0.1:8080: plain http"},
		{"http allowed when insecure", status.Options{Provider: status.Gitea, RepoURL: "http://git.example.com/a/b.git", Insecure: true}, ""},
		{"http on 127.0.0.1", status.Options{Provider: status.Gitea, RepoURL: "http://127.0.0.1:3000/a/b.git"}, ""},
		{"http on ::1", status.Options{Provider: status.GitLab, RepoURL: "https://h/a/b", APIURL: "http://[::1]:8080"}, ""},
		{"http on localhost", status.Options{Provider: status.GitHub, RepoURL: "https://h/a/b", APIURL: "http://localhost:8080"}, ""},
		{"https", status.Options{Provider: status.Gitea, RepoURL: "https://git.example.com/a/b.git"}, ""},
		{"ssh repository, https API", status.Options{Provider: status.Gitea, RepoURL: "git@git.example.com:a/b.git"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Token = token
			_, err := status.New(tc.opts)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("New: %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("New error = %v, want one containing %q", err, tc.wantErr)
			case err != nil && (strings.Contains(err.Error(), token) || strings.Contains(err.Error(), "s3cret")):
				t.Errorf("error carries a secret: %v", err)
			}
		})
	}
}

// TestReportNeverShowsSecrets: a recording server that echoes the
// request's credentials back in a failure, and descriptions that quote
// secrets: neither the error nor the status sent carries any of them.
func TestReportNeverShowsSecrets(t *testing.T) {
	const gitPassword = "git-pass-w0rd"
	basicAuth := base64.StdEncoding.EncodeToString([]byte("refit:" + token))
	cases := []struct {
		name     string
		provider status.Provider
		username string
		code     int
		desc     string
	}{
		{"github echoes the bearer header", status.GitHub, "", http.StatusUnauthorized, "applied"},
		{"gitlab echoes PRIVATE-TOKEN", status.GitLab, "", http.StatusForbidden, "applied"},
		{"gitea echoes the token header, server error", status.Gitea, "", http.StatusBadGateway, "applied"},
		{"bitbucket echoes basic credentials", status.Bitbucket, "refit", http.StatusUnauthorized, "applied"},
		{"description quotes a clone URL with a token", status.Gitea, "", http.StatusCreated,
			"fetch https://x-access-token:" + gitPassword + "@git.example.com/a/b.git: refused"},
		{"description quotes the status token", status.GitHub, "", http.StatusCreated, "token " + token + " leaked by a bug"},
		{"description quotes a Git password", status.GitLab, "", http.StatusCreated, "auth failed for refit/" + gitPassword},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var seen allRequests
			var bodies []string
			var mu sync.Mutex
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.add(r)
				data, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(data))
				mu.Unlock()
				w.WriteHeader(tc.code)
				// Echo every credential header, as a careless proxy might.
				for _, h := range []string{"Authorization", "Private-Token"} {
					_, _ = io.WriteString(w, h+": "+r.Header.Get(h)+"\n")
				}
			}))
			defer srv.Close()
			r, err := status.New(status.Options{Provider: tc.provider, RepoURL: "https://git.example.com/acme/app.git",
				APIURL: srv.URL, Token: token, Username: tc.username, Redact: []string{gitPassword}})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			err = r.Report(context.Background(), status.Status{Commit: sha, State: status.Failure, Context: "refit/app", Description: tc.desc})
			if tc.code >= 300 && err == nil {
				t.Fatalf("Report succeeded on HTTP %d", tc.code)
			}
			if tc.code < 300 && err != nil {
				t.Fatalf("Report: %v", err)
			}
			for _, secret := range []string{token, basicAuth, gitPassword} {
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("error carries a secret: %v", err)
				}
				for _, b := range bodies {
					if strings.Contains(b, secret) {
						t.Errorf("status sent to the host carries a secret: %s", b)
					}
				}
			}
			if tc.code < 300 && !strings.Contains(bodies[0], "[redacted]") && !strings.Contains(bodies[0], "https://git.example.com/a/b.git") {
				t.Errorf("description sent = %s, want the secret replaced", bodies[0])
			}
			if len(seen.list()) != 1 {
				t.Errorf("server saw %d requests, want 1", len(seen.list()))
			}
		})
	}
}

func TestRedactURLs(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"token in a clone URL", `fetch "https://oauth2:tok@gitlab.com/a/b.git": 401`, `fetch "https://gitlab.com/a/b.git": 401`},
		{"two URLs", "http://u:p@h/a and ssh://git:x@h:22/b", "http://h/a and ssh://h:22/b"},
		{"no credentials", "https://h/a@b", "https://h/a@b"},
		{"scp-like user is not a secret", "git@github.com:a/b.git", "git@github.com:a/b.git"},
		{"plain text", "rendered 3 objects", "rendered 3 objects"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.RedactURLs(tc.in); got != tc.want {
				t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
