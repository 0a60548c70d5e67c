package status_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/status"
)

const (
	sha   = "0123456789abcdef0123456789abcdef01234567"
	token = "tok-s3cret-value"
)

// request is what a test server saw.
type request struct {
	Method string
	URI    string
	Header http.Header
	Body   map[string]any
}

// recorder answers every request with code and body and keeps what it saw.
func recorder(t *testing.T, code int, answer string) (*httptest.Server, <-chan request) {
	t.Helper()
	seen := make(chan request, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var body map[string]any
		if err := json.Unmarshal(data, &body); err != nil {
			t.Errorf("request body is not a JSON object: %v: %s", err, data)
		}
		seen <- request{Method: r.Method, URI: r.RequestURI, Header: r.Header.Clone(), Body: body}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(srv.Close)
	return srv, seen
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func TestReportPerProvider(t *testing.T) {
	st := status.Status{
		Commit:      sha,
		State:       status.Failure,
		Context:     "refit/app",
		Description: "rollout failed: web-0 ImagePullBackOff",
		TargetURL:   "https://refit.example.com/apps/app",
	}
	cases := []struct {
		name     string
		opts     status.Options // APIURL is the test server's URL plus apiPath
		apiPath  string
		st       status.Status
		wantURI  string
		wantHead map[string]string
		wantBody map[string]any
	}{
		{
			name:    "github enterprise base URL gets /api/v3",
			opts:    status.Options{Provider: status.GitHub, RepoURL: "https://ghe.example.com/acme/app.git", Token: token},
			st:      st,
			wantURI: "/api/v3/repos/acme/app/statuses/" + sha,
			wantHead: map[string]string{
				"Authorization":        "Bearer " + token,
				"Accept":               "application/vnd.github+json",
				"X-GitHub-Api-Version": "2022-11-28",
				"Content-Type":         "application/json",
			},
			wantBody: map[string]any{"state": "failure", "context": "refit/app", "description": st.Description, "target_url": st.TargetURL},
		},
		{
			name:     "github API URL already ending in /api/v3",
			opts:     status.Options{Provider: status.GitHub, RepoURL: "git@ghe.example.com:acme/app.git", Token: token},
			apiPath:  "/api/v3/",
			st:       status.Status{Commit: sha, State: status.Pending, Context: "refit/app"},
			wantURI:  "/api/v3/repos/acme/app/statuses/" + sha,
			wantHead: map[string]string{"Authorization": "Bearer " + token},
			wantBody: map[string]any{"state": "pending", "context": "refit/app"},
		},
		{
			name:     "gitlab nested groups, failure is failed",
			opts:     status.Options{Provider: status.GitLab, RepoURL: "https://gitlab.example.com/group/sub/app.git", Token: token},
			st:       st,
			wantURI:  "/api/v4/projects/group%2Fsub%2Fapp/statuses/" + sha,
			wantHead: map[string]string{"Private-Token": token, "Authorization": ""},
			wantBody: map[string]any{"state": "failed", "name": "refit/app", "description": st.Description, "target_url": st.TargetURL},
		},
		{
			name:     "gitlab under a sub-path, API URL with /api/v4",
			opts:     status.Options{Provider: status.GitLab, RepoURL: "https://host/gitlab/group/app.git", Token: token},
			apiPath:  "/gitlab/api/v4",
			st:       status.Status{Commit: sha, State: status.Success, Context: "refit/app"},
			wantURI:  "/gitlab/api/v4/projects/group%2Fapp/statuses/" + sha,
			wantHead: map[string]string{"Private-Token": token},
			wantBody: map[string]any{"state": "success", "name": "refit/app"},
		},
		{
			name:     "gitlab error is failed",
			opts:     status.Options{Provider: status.GitLab, RepoURL: "git@gitlab.com:group/app.git", Token: token},
			st:       status.Status{Commit: sha, State: status.Error, Context: "refit/app"},
			wantURI:  "/api/v4/projects/group%2Fapp/statuses/" + sha,
			wantHead: map[string]string{"Private-Token": token},
			wantBody: map[string]any{"state": "failed", "name": "refit/app"},
		},
		{
			name:     "gitea",
			opts:     status.Options{Provider: status.Gitea, RepoURL: "ssh://git@gitea.example.com:2222/acme/app.git", Token: token},
			st:       st,
			wantURI:  "/api/v1/repos/acme/app/statuses/" + sha,
			wantHead: map[string]string{"Authorization": "token " + token, "Content-Type": "application/json"},
			wantBody: map[string]any{"state": "failure", "context": "refit/app", "description": st.Description, "target_url": st.TargetURL},
		},
		{
			name:     "gitea under a sub-path",
			opts:     status.Options{Provider: status.Gitea, RepoURL: "https://host/gitea/acme/app.git", Token: token},
			apiPath:  "/gitea",
			st:       status.Status{Commit: sha, State: status.Success, Context: "refit/app"},
			wantURI:  "/gitea/api/v1/repos/acme/app/statuses/" + sha,
			wantHead: map[string]string{"Authorization": "token " + token},
			wantBody: map[string]any{"state": "success", "context": "refit/app"},
		},
		{
			name:     "bitbucket app password",
			opts:     status.Options{Provider: status.Bitbucket, RepoURL: "https://refit@bitbucket.org/ws/app.git", Token: token, Username: "refit"},
			st:       st,
			wantURI:  "/2.0/repositories/ws/app/commit/" + sha + "/statuses/build",
			wantHead: map[string]string{"Authorization": basic("refit", token)},
			wantBody: map[string]any{"key": "refit/app", "name": "refit/app", "state": "FAILED", "description": st.Description, "url": st.TargetURL},
		},
		{
			name:     "bitbucket access token, pending, commit page as URL",
			opts:     status.Options{Provider: status.Bitbucket, RepoURL: "git@bitbucket.org:ws/app.git", Token: token},
			apiPath:  "/2.0",
			st:       status.Status{Commit: sha, State: status.Pending, Context: "refit/app"},
			wantURI:  "/2.0/repositories/ws/app/commit/" + sha + "/statuses/build",
			wantHead: map[string]string{"Authorization": "Bearer " + token},
			wantBody: map[string]any{"key": "refit/app", "name": "refit/app", "state": "INPROGRESS", "url": "https://bitbucket.org/ws/app/commits/" + sha},
		},
		{
			name:     "bitbucket success, long context hashed into the key",
			opts:     status.Options{Provider: status.Bitbucket, RepoURL: "https://bitbucket.org/ws/app", Token: token},
			st:       status.Status{Commit: sha, State: status.Success, Context: "refit/" + strings.Repeat("a", 40)},
			wantURI:  "/2.0/repositories/ws/app/commit/" + sha + "/statuses/build",
			wantHead: map[string]string{"Authorization": "Bearer " + token},
			wantBody: map[string]any{
				"key": "d19c15b8cd18031f7986e5b21fee6ecd1ee36235" /* sha1 of the context */, "name": "refit/" + strings.Repeat("a", 40),
				"state": "SUCCESSFUL", "url": "https://bitbucket.org/ws/app/commits/" + sha,
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen := recorder(t, http.StatusCreated, `{"id":1}`)
			opts := tc.opts
			opts.APIURL = srv.URL + tc.apiPath
			r, err := status.New(opts)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := r.Report(context.Background(), tc.st); err != nil {
				t.Fatalf("Report: %v", err)
			}
			got := <-seen
			if got.Method != http.MethodPost {
				t.Errorf("method = %s, want POST", got.Method)
			}
			if got.URI != tc.wantURI {
				t.Errorf("request URI = %s, want %s", got.URI, tc.wantURI)
			}
			for k, want := range tc.wantHead {
				if v := got.Header.Get(k); v != want {
					t.Errorf("header %s = %q, want %q", k, v, want)
				}
			}
			if diff := cmp.Diff(tc.wantBody, got.Body); diff != "" {
				t.Errorf("body (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDefaultAPIBase checks the API address derived from the repository URL
// without an override, on a transport that records instead of dialling.
func TestDefaultAPIBase(t *testing.T) {
	cases := []struct {
		name     string
		provider status.Provider
		repoURL  string
		want     string
	}{
		{"github.com", status.GitHub, "https://github.com/acme/app.git", "https://api.github.com/repos/acme/app/statuses/" + sha},
		{"github.com over ssh", status.GitHub, "git@github.com:acme/app.git", "https://api.github.com/repos/acme/app/statuses/" + sha},
		{"github enterprise", status.GitHub, "https://ghe.example.com/acme/app", "https://ghe.example.com/api/v3/repos/acme/app/statuses/" + sha},
		{"gitlab.com", status.GitLab, "git@gitlab.com:group/sub/app.git", "https://gitlab.com/api/v4/projects/group%2Fsub%2Fapp/statuses/" + sha},
		{"self-hosted gitlab keeps its port", status.GitLab, "https://gitlab.example.com:8443/group/app", "https://gitlab.example.com:8443/api/v4/projects/group%2Fapp/statuses/" + sha},
		{"gitea over http", status.Gitea, "http://127.0.0.1:3000/refit/app.git", "http://127.0.0.1:3000/api/v1/repos/refit/app/statuses/" + sha},
		{"gitea over ssh", status.Gitea, "ssh://git@gitea.example.com:2222/acme/app.git", "https://gitea.example.com/api/v1/repos/acme/app/statuses/" + sha},
		{"gitea under a sub-path", status.Gitea, "https://example.com/git/acme/app.git", "https://example.com/git/api/v1/repos/acme/app/statuses/" + sha},
		{"bitbucket", status.Bitbucket, "git@bitbucket.org:ws/app.git", "https://api.bitbucket.org/2.0/repositories/ws/app/commit/" + sha + "/statuses/build"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got string
			client := &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
				got = req.URL.String()
				return &http.Response{StatusCode: http.StatusCreated, Body: io.NopCloser(strings.NewReader("{}")), Header: http.Header{}}, nil
			})}
			r, err := status.New(status.Options{Provider: tc.provider, RepoURL: tc.repoURL, Token: token, HTTPClient: client})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := r.Report(context.Background(), status.Status{Commit: sha, State: status.Success, Context: "refit/app"}); err != nil {
				t.Fatalf("Report: %v", err)
			}
			if got != tc.want {
				t.Errorf("POST %s, want %s", got, tc.want)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestReportTruncatesDescription(t *testing.T) {
	cases := []struct {
		name, in, want string
	}{
		{"short kept", "applied", "applied"},
		{"exactly the limit kept", strings.Repeat("x", status.MaxDescription), strings.Repeat("x", status.MaxDescription)},
		{"long cut with an ellipsis", strings.Repeat("x", 500), strings.Repeat("x", status.MaxDescription-1) + "…"},
		{"multi-byte characters counted as one", strings.Repeat("é", 200), strings.Repeat("é", status.MaxDescription-1) + "…"},
		{"surrounding space trimmed", "  applied \n", "applied"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, seen := recorder(t, http.StatusCreated, "{}")
			r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.URL + "/refit/app.git", Token: token})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if err := r.Report(context.Background(), status.Status{Commit: sha, State: status.Failure, Context: "refit/app", Description: tc.in}); err != nil {
				t.Fatalf("Report: %v", err)
			}
			if got := (<-seen).Body["description"]; got != tc.want {
				t.Errorf("description = %q (%d characters), want %q", got, len([]rune(got.(string))), tc.want)
			}
		})
	}
}

func TestTruncate(t *testing.T) {
	cases := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"fits", "abc", 3, "abc"},
		{"cut", "abcd", 3, "ab…"},
		{"runes", "ééééé", 4, "ééé…"},
		{"one", "abc", 1, "…"},
		{"zero", "abc", 0, ""},
		{"empty", "", 5, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := status.Truncate(tc.in, tc.max); got != tc.want {
				t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.max, got, tc.want)
			}
		})
	}
}

func TestReportErrors(t *testing.T) {
	cases := []struct {
		name          string
		provider      status.Provider
		code          int
		header        map[string]string
		body          string
		wantNil       bool
		wantTransient bool
		wantText      []string
	}{
		{
			name: "unauthorised, token echoed in the body", provider: status.Gitea, code: http.StatusUnauthorized,
			body:     `{"message":"token is invalid: ` + token + `"}`,
			wantText: []string{"gitea refit/app@0123456789ab: report status: HTTP 401 Unauthorized", "token is invalid: [redacted]"},
		},
		{
			name: "unknown commit", provider: status.GitHub, code: http.StatusUnprocessableEntity,
			body:     "{\n  \"message\": \"No commit found for SHA\"\n}",
			wantText: []string{"github refit/app@0123456789ab", "HTTP 422", `{ "message": "No commit found for SHA" }`},
		},
		{
			name: "rate limited by github", provider: status.GitHub, code: http.StatusForbidden,
			header: map[string]string{"X-RateLimit-Remaining": "0"}, body: `{"message":"API rate limit exceeded"}`,
			wantTransient: true, wantText: []string{"HTTP 403 Forbidden"},
		},
		{
			name: "server error", provider: status.Bitbucket, code: http.StatusBadGateway, body: strings.Repeat("<html>", 200),
			wantTransient: true, wantText: []string{"bitbucket refit/app@0123456789ab", "HTTP 502 Bad Gateway", "…"},
		},
		{
			name: "gitea unknown commit is a 500 that retrying cannot fix", provider: status.Gitea, code: http.StatusInternalServerError,
			body:     `{"message":"GetCommit[0000]: object does not exist [id: 0000, rel_path: ]"}`,
			wantText: []string{"HTTP 500 Internal Server Error", "object does not exist"},
		},
		{
			name: "gitea other 500 is transient", provider: status.Gitea, code: http.StatusInternalServerError,
			body: `{"message":"database is locked"}`, wantTransient: true, wantText: []string{"database is locked"},
		},
		{
			name: "gitlab same state twice is fine", provider: status.GitLab, code: http.StatusBadRequest,
			body: `{"message":"Cannot transition status via :enqueue from :pending (Reasons(s): Status cannot transition via \"enqueue\")"}`, wantNil: true,
		},
		{
			name: "gitlab other bad request", provider: status.GitLab, code: http.StatusBadRequest,
			body: `{"message":"state is invalid"}`, wantText: []string{"gitlab refit/app@0123456789ab", "HTTP 400", "state is invalid"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.code)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			r, err := status.New(status.Options{Provider: tc.provider, RepoURL: "https://git.example.com/refit/app.git", APIURL: srv.URL, Token: token})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			err = r.Report(context.Background(), status.Status{Commit: sha, State: status.Pending, Context: "refit/app"})
			if tc.wantNil {
				if err != nil {
					t.Fatalf("Report: %v, want nil", err)
				}
				return
			}
			var httpErr *status.HTTPError
			if !errors.As(err, &httpErr) {
				t.Fatalf("Report error = %v, want an *HTTPError", err)
			}
			if httpErr.StatusCode != tc.code || httpErr.Transient != tc.wantTransient {
				t.Errorf("HTTPError code %d transient %v, want %d %v", httpErr.StatusCode, httpErr.Transient, tc.code, tc.wantTransient)
			}
			for _, want := range tc.wantText {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error carries the token: %v", err)
			}
		})
	}
}

func TestReportTransportErrors(t *testing.T) {
	t.Run("connection refused", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.URL + "/refit/app", Token: token})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		err = r.Report(context.Background(), status.Status{Commit: sha, State: status.Pending, Context: "refit/app"})
		if err == nil || !strings.Contains(err.Error(), "gitea refit/app@0123456789ab: report status:") || strings.Contains(err.Error(), token) {
			t.Fatalf("Report error = %v, want one naming provider and repository, without the token", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
		defer srv.Close()
		defer close(release)
		r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.URL + "/refit/app", Token: token, Timeout: 100 * time.Millisecond})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		start := time.Now()
		err = r.Report(context.Background(), status.Status{Commit: sha, State: status.Pending, Context: "refit/app"})
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("Report = %v after %s, want a timeout error", err, time.Since(start))
		}
	})
	t.Run("cancelled context", func(t *testing.T) {
		srv, _ := recorder(t, http.StatusCreated, "{}")
		r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.URL + "/refit/app", Token: token})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err = r.Report(ctx, status.Status{Commit: sha, State: status.Pending, Context: "refit/app"})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Report error = %v, want context.Canceled", err)
		}
	})
}

func TestReportRefusesBadStatus(t *testing.T) {
	srv, seen := recorder(t, http.StatusCreated, "{}")
	r, err := status.New(status.Options{Provider: status.Gitea, RepoURL: srv.URL + "/refit/app", Token: token})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	cases := []struct {
		name string
		st   status.Status
		want string
	}{
		{"short sha", status.Status{Commit: "abc", State: status.Success, Context: "refit/app"}, `commit "abc" is not a hex SHA`},
		{"path in sha", status.Status{Commit: "../../admin", State: status.Success, Context: "refit/app"}, "is not a hex SHA"},
		{"unknown state", status.Status{Commit: sha, State: "warning", Context: "refit/app"}, `unknown state "warning" (known: pending, success, failure, error)`},
		{"no context", status.Status{Commit: sha, State: status.Success}, "status context is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Report(context.Background(), tc.st)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "gitea refit/app: ") {
				t.Fatalf("Report error = %v, want gitea refit/app: …%s", err, tc.want)
			}
		})
	}
	select {
	case req := <-seen:
		t.Errorf("a refused status was sent: %+v", req)
	default:
	}
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		name string
		opts status.Options
		want string
	}{
		{"unknown provider", status.Options{Provider: "gogs", RepoURL: "https://h/a/b", Token: token}, `unknown commit status provider "gogs" (known: bitbucket, gitea, github, gitlab)`},
		{"empty provider", status.Options{RepoURL: "https://h/a/b", Token: token}, `unknown commit status provider ""`},
		{"no token", status.Options{Provider: status.GitHub, RepoURL: "https://github.com/a/b"}, "github status for a/b: token is empty"},
		{"bad repo URL", status.Options{Provider: status.Gitea, RepoURL: "https://user:s3cret@h/a", Token: token}, "gitea status: repository URL https://h/a: want an owner/repo path"},
		{"github needs owner/repo", status.Options{Provider: status.GitHub, RepoURL: "https://github.com/a/b/c", Token: token}, `repository path "a/b/c": want owner/repo`},
		{"bitbucket needs workspace/repo", status.Options{Provider: status.Bitbucket, RepoURL: "https://bitbucket.org/a/b/c", Token: token}, "want owner/repo"},
		{"bad API URL", status.Options{Provider: status.Gitea, RepoURL: "https://h/a/b", APIURL: "ftp://user:s3cret@h", Token: token}, "gitea status for a/b: API URL ftp://h: want an http(s) URL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := status.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New error = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), token) {
				t.Errorf("error carries a secret: %v", err)
			}
		})
	}
}

func TestTokenFromFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, path, want, wantErr string
	}{
		{"trimmed", good, token, ""},
		{"empty", empty, "", "token file " + empty + " is empty"},
		{"missing", filepath.Join(dir, "nope"), "", "read token: open " + filepath.Join(dir, "nope")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := status.TokenFromFile(tc.path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("TokenFromFile error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("TokenFromFile = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
