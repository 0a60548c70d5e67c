package status

import (
	"strings"
	"testing"
)

func TestParseRepoURL(t *testing.T) {
	cases := []struct {
		name    string
		raw     string
		want    repository
		wantErr string
	}{
		{"https", "https://github.com/acme/app", repository{"https", "github.com", "acme/app"}, ""},
		{"https .git", "https://github.com/acme/app.git", repository{"https", "github.com", "acme/app"}, ""},
		{"https trailing slash", "https://github.com/acme/app/", repository{"https", "github.com", "acme/app"}, ""},
		{"https credentials dropped", "https://x-access-token:s3cret@github.com/acme/app.git", repository{"https", "github.com", "acme/app"}, ""},
		{"http with port", "http://127.0.0.1:3000/refit/app.git", repository{"http", "127.0.0.1:3000", "refit/app"}, ""},
		{"gitlab nested groups", "https://gitlab.com/group/sub/deeper/app.git", repository{"https", "gitlab.com", "group/sub/deeper/app"}, ""},
		{"ssh", "ssh://git@github.com/acme/app.git", repository{"ssh", "github.com", "acme/app"}, ""},
		{"ssh port dropped", "ssh://git@gitea.example.com:2222/acme/app.git", repository{"ssh", "gitea.example.com", "acme/app"}, ""},
		{"scp-like", "git@github.com:acme/app.git", repository{"ssh", "github.com", "acme/app"}, ""},
		{"scp-like no user", "github.com:acme/app", repository{"ssh", "github.com", "acme/app"}, ""},
		{"scp-like nested", "git@gitlab.com:group/sub/app.git", repository{"ssh", "gitlab.com", "group/sub/app"}, ""},
		{"scheme upper case", "HTTPS://github.com/acme/app", repository{"https", "github.com", "acme/app"}, ""},
		{"empty", "", repository{}, "repository URL is empty"},
		{"no repo", "https://github.com/acme", repository{}, "want an owner/repo path"},
		{"no host", "https:///acme/app", repository{}, "has no host"},
		{"file", "file:///srv/git/app.git", repository{}, `unsupported scheme "file"`},
		{"relative segment", "https://github.com/acme/../app", repository{}, "relative segment"},
		{"not a url", "acme/app", repository{}, "neither a URL nor host:path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRepoURL(tc.raw)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseRepoURL(%q) error = %v, want one containing %q", tc.raw, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRepoURL(%q): %v", tc.raw, err)
			}
			if got != tc.want {
				t.Errorf("parseRepoURL(%q) = %+v, want %+v", tc.raw, got, tc.want)
			}
		})
	}
}

func TestParseRepoURLErrorsHideCredentials(t *testing.T) {
	for _, raw := range []string{
		"https://user:s3cret@github.com/acme",
		"ftp://user:s3cret@github.com/acme/app",
		"user:s3cret@github.com:acme",
		"https://user:s3cret@github.com/acme/%zz",
	} {
		t.Run(raw, func(t *testing.T) {
			_, err := parseRepoURL(raw)
			if err == nil {
				t.Fatalf("parseRepoURL(%q) succeeded, want an error", raw)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error carries the password: %v", err)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	cases := []struct{ name, raw, want string }{
		{"user and password", "https://user:s3cret@host/a/b.git", "https://host/a/b.git"},
		{"token only", "https://s3cret@host/a", "https://host/a"},
		{"no credentials", "https://host/a", "https://host/a"},
		{"scp-like", "git@host:a/b.git", "host:a/b.git"},
		{"scp-like password", "user:s3cret@host:a/b.git", "host:a/b.git"},
		{"unparsable", "https://user:s3cret@host/%zz", "https://host/%zz"},
		{"unparsable no path", "https://user:s3cret@ho st", "https://ho st"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactURL(tc.raw); got != tc.want {
				t.Errorf("redactURL(%q) = %q, want %q", tc.raw, got, tc.want)
			}
		})
	}
}
