package status

import (
	"net/http"
	"net/url"
	"strings"
)

// gitea posts to POST {base}/api/v1/repos/{owner}/{repo}/statuses/{sha}.
type gitea struct {
	base, owner, name, token string
}

func newGitea(repo repository, api *url.URL, opts Options) (endpoint, error) {
	p := repo.path
	var base string
	if api != nil {
		base = strings.TrimSuffix(api.String(), "/api/v1")
		p = stripPrefix(p, strings.TrimSuffix(api.Path, "/api/v1"))
	} else {
		base = repo.webBase()
		// Gitea names a repository owner/repo, so anything before that is
		// the sub-path the instance is served under (ROOT_URL).
		if segs := strings.Split(p, "/"); len(segs) > 2 {
			base += "/" + strings.Join(segs[:len(segs)-2], "/")
			p = strings.Join(segs[len(segs)-2:], "/")
		}
	}
	owner, name, err := ownerRepo(p)
	if err != nil {
		return nil, err
	}
	return gitea{base: base, owner: owner, name: name, token: opts.Token}, nil
}

type giteaStatus struct {
	State       string `json:"state"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description,omitempty"`
	Context     string `json:"context"`
}

func (g gitea) request(st Status) (string, any) {
	u := g.base + "/api/v1/repos/" + url.PathEscape(g.owner) + "/" + url.PathEscape(g.name) + "/statuses/" + st.Commit
	// Gitea's states include refit's four (and "warning").
	return u, giteaStatus{State: string(st.State), TargetURL: st.TargetURL, Description: st.Description, Context: st.Context}
}

func (g gitea) authorize(h http.Header) { h.Set("Authorization", "token "+g.token) }

func (gitea) alreadySet(int, string) bool { return false }

// permanent: Gitea (v1.26) answers a status on a commit it does not have
// with 500 "object does not exist"; retrying cannot help.
func (gitea) permanent(code int, body string) bool {
	return code == http.StatusInternalServerError && strings.Contains(body, "object does not exist")
}

func (g gitea) baseURL() string { return g.base }
