package status

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// gitlab posts to POST {base}/api/v4/projects/{url-encoded path}/statuses/{sha}
// (docs.gitlab.com/api/commits, "Set the pipeline status of a commit").
type gitlab struct {
	base, project, token string
}

func newGitLab(repo repository, api *url.URL, opts Options) (endpoint, error) {
	p, base := repo.path, repo.webBase()
	if api != nil {
		base = strings.TrimSuffix(api.String(), "/api/v4")
		p = stripPrefix(p, strings.TrimSuffix(api.Path, "/api/v4"))
	}
	if !strings.Contains(p, "/") {
		return nil, fmt.Errorf("repository path %q: want group/project", p)
	}
	return gitlab{base: base, project: p, token: opts.Token}, nil
}

type gitlabStatus struct {
	State       string `json:"state"`
	Name        string `json:"name"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description,omitempty"`
}

func gitlabState(s State) string {
	switch s {
	case Success:
		return "success"
	case Failure, Error:
		// GitLab has no "error"; "canceled" would read as a user's choice.
		return "failed"
	default:
		return "pending"
	}
}

func (g gitlab) request(st Status) (string, any) {
	// The project is addressed by its full path with "/" encoded, which
	// covers nested groups (group/subgroup/project).
	u := g.base + "/api/v4/projects/" + url.PathEscape(g.project) + "/statuses/" + st.Commit
	return u, gitlabStatus{State: gitlabState(st.State), Name: st.Context, TargetURL: st.TargetURL, Description: st.Description}
}

func (g gitlab) authorize(h http.Header) { h.Set("PRIVATE-TOKEN", g.token) }

// alreadySet: GitLab answers a status posted twice in the same state with
// 400 "Cannot transition status via :enqueue from :pending"; a reconciler
// reports the same state on every pass, so that is not a failure.
func (gitlab) alreadySet(code int, body string) bool {
	return code == http.StatusBadRequest && strings.Contains(body, "Cannot transition status")
}

func (gitlab) permanent(int, string) bool { return false }

func (g gitlab) baseURL() string { return g.base }
