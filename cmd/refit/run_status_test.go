package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/refit-gitops/refit/config"
	"github.com/refit-gitops/refit/reconcile"
)

func TestPathScrubber(t *testing.T) {
	p := newPathScrubber("/var/cache/refit/sources/")
	cases := []struct{ name, in, want string }{
		{"file of the checkout", "render: /var/cache/refit/sources/0123456789abcdef/" + sha40 + "/deploy/app.yaml: line 3: mapping values are not allowed",
			"render: deploy/app.yaml: line 3: mapping values are not allowed"},
		{"temporary checkout", "checkout: open /var/cache/refit/sources/0123456789abcdef/.tmp-123/a/b: too many files", "checkout: open a/b: too many files"},
		{"the cache folder itself", "mkdir /var/cache/refit/sources: read-only file system", "mkdir [cache]: read-only file system"},
		{"a repository folder", `lock "/var/cache/refit/sources/0123456789abcdef": busy`, `lock "[cache]": busy`},
		{"other paths kept", "render: /etc/passwd is outside the repository", "render: /etc/passwd is outside the repository"},
		{"nothing to do", "applied and healthy", "applied and healthy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.scrub(tc.in); got != tc.want {
				t.Errorf("scrub(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := newPathScrubber("").scrub("/x/y"); got != "/x/y" {
		t.Errorf("no cache folder: scrub = %q", got)
	}
}

const sha40 = "0123456789abcdef0123456789abcdef01234567"

// TestStatusReporterKeepsSecretsAndPathsOut wires an app's reporter as
// refit run does and sends a description holding the app's Git password,
// a clone URL with a token and a checkout path: the host receives none of
// them.
func TestStatusReporterKeepsSecretsAndPathsOut(t *testing.T) {
	const gitPassword, statusToken = "git-pass-0123456789", "status-token-0123456789"
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, string(body))
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cache := filepath.Join(dir, "cache")
	w := &appWiring{cacheDir: cache}
	app := config.App{
		Name: "shop",
		Source: config.Source{URL: srv.URL + "/acme/shop.git",
			UsernameFile: file("user", "refit"), PasswordFile: file("pass", gitPassword)},
		Status: &config.Status{Provider: "gitea", TokenFile: file("token", statusToken)},
	}
	rep, err := w.statusReporter(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	// Short enough once cleaned not to be truncated: what is cut off
	// could not leak anyway.
	desc := "password " + gitPassword + " refused; token " + statusToken + "; https://refit:" + gitPassword +
		"@git.example.com/a.git; render: " + cache + "/0123456789abcdef/" + sha40 + "/deploy/app.yaml: line 3: bad"
	if err := rep.Report(context.Background(), sha40, reconcile.CommitFailure, desc); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("host received %d statuses, want 1", len(got))
	}
	for _, secret := range []string{gitPassword, statusToken, cache, dir} {
		if strings.Contains(got[0], secret) {
			t.Errorf("status sent carries %q: %s", secret, got[0])
		}
	}
	if !strings.Contains(got[0], "render: deploy/app.yaml: line 3") {
		t.Errorf("status sent = %s, want the file named relative to the repository", got[0])
	}
}
