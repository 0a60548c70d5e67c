package status

import (
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
)

// bitbucket posts to POST {api}/2.0/repositories/{workspace}/{repo}/commit/{sha}/statuses/build
// (developer.atlassian.com, Bitbucket Cloud REST API, commit statuses).
type bitbucket struct {
	base, web, workspace, name, username, token string
}

// maxBitbucketKey is the longest key Bitbucket accepts.
const maxBitbucketKey = 40

func newBitbucket(repo repository, api *url.URL, opts Options) (endpoint, error) {
	base := "https://api.bitbucket.org"
	if api != nil {
		base = strings.TrimSuffix(api.String(), "/2.0")
	}
	workspace, name, err := ownerRepo(repo.path)
	if err != nil {
		return nil, err
	}
	return bitbucket{base: base, web: repo.webBase(), workspace: workspace, name: name, username: opts.Username, token: opts.Token}, nil
}

type bitbucketStatus struct {
	Key         string `json:"key"`
	State       string `json:"state"`
	Name        string `json:"name"`
	URL         string `json:"url"`
	Description string `json:"description,omitempty"`
}

func bitbucketState(s State) string {
	switch s {
	case Success:
		return "SUCCESSFUL"
	case Failure, Error:
		return "FAILED"
	default:
		return "INPROGRESS"
	}
}

// bitbucketKey is the context, or its SHA-1 when too long: two long
// contexts with a common prefix must not collide.
func bitbucketKey(context string) string {
	if len(context) <= maxBitbucketKey {
		return context
	}
	sum := sha1.Sum([]byte(context))
	return hex.EncodeToString(sum[:])
}

func (b bitbucket) request(st Status) (string, any) {
	u := b.base + "/2.0/repositories/" + url.PathEscape(b.workspace) + "/" + url.PathEscape(b.name) +
		"/commit/" + st.Commit + "/statuses/build"
	target := st.TargetURL
	if target == "" {
		// Bitbucket requires a URL; the commit's own page is a sane one.
		target = b.web + "/" + url.PathEscape(b.workspace) + "/" + url.PathEscape(b.name) + "/commits/" + st.Commit
	}
	return u, bitbucketStatus{Key: bitbucketKey(st.Context), State: bitbucketState(st.State), Name: st.Context, URL: target, Description: st.Description}
}

// authorize: an app password goes with its account name (basic auth); a
// workspace or repository access token alone is a bearer token.
func (b bitbucket) authorize(h http.Header) {
	if b.username != "" {
		r := http.Request{Header: h}
		r.SetBasicAuth(b.username, b.token)
		return
	}
	h.Set("Authorization", "Bearer "+b.token)
}

func (bitbucket) alreadySet(int, string) bool { return false }

func (bitbucket) permanent(int, string) bool { return false }

func (b bitbucket) baseURL() string { return b.base }
