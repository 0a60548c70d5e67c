package status

import (
	"net/http"
	"net/url"
	"strings"
)

// github posts to POST {api}/repos/{owner}/{repo}/statuses/{sha}
// (docs.github.com/rest/commits/statuses).
type github struct {
	base, owner, name, token string
}

func newGitHub(repo repository, api *url.URL, opts Options) (endpoint, error) {
	var base string
	switch {
	case api != nil:
		base = api.String()
		// A GitHub Enterprise base URL serves its API under /api/v3, and
		// people paste the web address; go-github adds it the same way.
		if api.Host != "api.github.com" && !strings.HasSuffix(api.Path, "/api/v3") {
			base += "/api/v3"
		}
	case strings.EqualFold(repo.host, "github.com") || strings.EqualFold(repo.host, "www.github.com"):
		base = "https://api.github.com"
	default:
		base = repo.webBase() + "/api/v3"
	}
	owner, name, err := ownerRepo(repo.path)
	if err != nil {
		return nil, err
	}
	return github{base: base, owner: owner, name: name, token: opts.Token}, nil
}

type githubStatus struct {
	State       string `json:"state"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description,omitempty"`
	Context     string `json:"context"`
}

func (g github) request(st Status) (string, any) {
	u := g.base + "/repos/" + url.PathEscape(g.owner) + "/" + url.PathEscape(g.name) + "/statuses/" + st.Commit
	// GitHub's states are refit's: pending, success, failure, error.
	return u, githubStatus{State: string(st.State), TargetURL: st.TargetURL, Description: st.Description, Context: st.Context}
}

func (g github) authorize(h http.Header) {
	h.Set("Authorization", "Bearer "+g.token)
	h.Set("Accept", "application/vnd.github+json")
	h.Set("X-GitHub-Api-Version", "2022-11-28")
}

func (github) alreadySet(int, string) bool { return false }

func (github) permanent(int, string) bool { return false }

func (g github) baseURL() string { return g.base }
