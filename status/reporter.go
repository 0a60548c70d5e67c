package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// Provider names a Git host's commit status API.
type Provider string

const (
	GitHub    Provider = "github"
	GitLab    Provider = "gitlab"
	Gitea     Provider = "gitea"
	Bitbucket Provider = "bitbucket"
)

// DefaultTimeout bounds one status request, so a hanging host cannot hold
// up a reconcile.
const DefaultTimeout = 15 * time.Second

// Options configure a Reporter for one repository.
type Options struct {
	Provider Provider
	// RepoURL is the URL refit clones from (https, ssh or host:path);
	// the owner/repo, project path or workspace/repo is read from it.
	RepoURL string
	// APIURL, optional, overrides the API base derived from RepoURL:
	// GitHub Enterprise (https://ghe.example.com, "/api/v3" is added when
	// missing), a self-hosted GitLab or Gitea reached at another address,
	// or a test server. Its path prefix, when the repository URL carries
	// it too (Gitea served under /gitea/), is not part of the repository.
	APIURL string
	// Token authenticates: GitHub and Gitea personal access tokens, GitLab
	// access tokens, Bitbucket app passwords (with Username) or access
	// tokens (without). It is sent in a header and never logged.
	Token string
	// Username is the Bitbucket account an app password belongs to.
	Username string
	// Timeout bounds one request (DefaultTimeout when zero); it is not used
	// when HTTPClient is set.
	Timeout time.Duration
	// HTTPClient, optional, replaces the default client (proxies, CAs).
	HTTPClient *http.Client
}

// endpoint is what differs between providers: where a status goes, how it
// is encoded and authenticated.
type endpoint interface {
	// request returns the URL to POST st to and the JSON body.
	request(st Status) (string, any)
	authorize(h http.Header)
	// alreadySet reports whether a refusal means the status is in place.
	alreadySet(code int, body string) bool
	// permanent reports whether a server error will not go away by itself.
	permanent(code int, body string) bool
}

var (
	_ endpoint = github{}
	_ endpoint = gitlab{}
	_ endpoint = gitea{}
	_ endpoint = bitbucket{}
)

// Reporter posts commit statuses for one repository. It is safe for
// concurrent use.
type Reporter struct {
	provider Provider
	repo     string
	api      endpoint
	client   *http.Client
	token    string
}

func constructors() map[Provider]func(repository, *url.URL, Options) (endpoint, error) {
	return map[Provider]func(repository, *url.URL, Options) (endpoint, error){
		GitHub:    newGitHub,
		GitLab:    newGitLab,
		Gitea:     newGitea,
		Bitbucket: newBitbucket,
	}
}

// New returns a Reporter for opts.RepoURL on opts.Provider.
func New(opts Options) (*Reporter, error) {
	mk, ok := constructors()[opts.Provider]
	if !ok {
		return nil, fmt.Errorf("unknown commit status provider %q (known: %s)", opts.Provider, knownProviders())
	}
	repo, err := parseRepoURL(opts.RepoURL)
	if err != nil {
		return nil, fmt.Errorf("%s status: %w", opts.Provider, err)
	}
	if opts.Token == "" {
		return nil, fmt.Errorf("%s status for %s: token is empty", opts.Provider, repo.path)
	}
	var api *url.URL
	if opts.APIURL != "" {
		if api, err = parseAPIURL(opts.APIURL); err != nil {
			return nil, fmt.Errorf("%s status for %s: %w", opts.Provider, repo.path, err)
		}
	}
	ep, err := mk(repo, api, opts)
	if err != nil {
		return nil, fmt.Errorf("%s status for %s: %w", opts.Provider, repo.path, err)
	}
	client := opts.HTTPClient
	if client == nil {
		timeout := opts.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		client = &http.Client{Timeout: timeout}
	}
	return &Reporter{provider: opts.Provider, repo: repo.path, api: ep, client: client, token: opts.Token}, nil
}

// String names the provider and repository ("gitea acme/app"), for logs.
func (r *Reporter) String() string { return string(r.provider) + " " + r.repo }

func knownProviders() string {
	var names []string
	for p := range constructors() {
		names = append(names, string(p))
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// Report posts st. The description is truncated to MaxDescription
// characters. A refusal by the host is an *HTTPError.
func (r *Reporter) Report(ctx context.Context, st Status) error {
	if err := st.validate(); err != nil {
		return fmt.Errorf("%s %s: %w", r.provider, r.repo, err)
	}
	st.Description = Truncate(strings.TrimSpace(st.Description), MaxDescription)
	target, body := r.api.request(st)
	payload, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s %s@%s: encode status: %w", r.provider, r.repo, short(st.Commit), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
	if err != nil {
		return fmt.Errorf("%s %s@%s: %w", r.provider, r.repo, short(st.Commit), err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "refit")
	r.api.authorize(req.Header)
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s@%s: report status: %w", r.provider, r.repo, short(st.Commit), r.scrubErr(err))
	}
	defer resp.Body.Close()
	// Enough of the body for a useful message; the rest is drained so the
	// connection can be reused.
	head, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	excerpt := r.excerpt(head)
	if r.api.alreadySet(resp.StatusCode, string(head)) {
		return nil
	}
	return &HTTPError{
		Provider:   r.provider,
		Repository: r.repo,
		Commit:     st.Commit,
		StatusCode: resp.StatusCode,
		Body:       excerpt,
		Transient:  transient(resp) && !r.api.permanent(resp.StatusCode, string(head)),
	}
}

// excerpt is the start of a response body on one line, with the token
// removed should the host echo it.
func (r *Reporter) excerpt(body []byte) string {
	s := strings.Join(strings.Fields(string(body)), " ")
	if r.token != "" {
		s = strings.ReplaceAll(s, r.token, "[redacted]")
	}
	return Truncate(s, 300)
}

// scrubErr keeps the error chain (errors.Is on timeouts and cancellation
// still works) unless its text carries the token.
func (r *Reporter) scrubErr(err error) error {
	if r.token == "" || !strings.Contains(err.Error(), r.token) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), r.token, "[redacted]"))
}

func transient(resp *http.Response) bool {
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode >= 500:
		return true
	case resp.StatusCode == http.StatusForbidden && resp.Header.Get("X-RateLimit-Remaining") == "0":
		// GitHub answers an exhausted rate limit with 403, not 429.
		return true
	}
	return false
}

// HTTPError is a status the Git host refused.
type HTTPError struct {
	Provider   Provider
	Repository string
	Commit     string
	StatusCode int
	// Body is the start of the response body, on one line.
	Body string
	// Transient is true when a later retry may succeed: rate limits,
	// timeouts and server errors. Otherwise the request itself is wrong
	// (bad token, missing scope, unknown repository or commit).
	Transient bool
}

func (e *HTTPError) Error() string {
	msg := fmt.Sprintf("%s %s@%s: report status: HTTP %d %s", e.Provider, e.Repository, short(e.Commit),
		e.StatusCode, http.StatusText(e.StatusCode))
	if e.Body != "" {
		msg += ": " + e.Body
	}
	return msg
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// TokenFromFile reads a token from a file (a mounted Secret), without the
// surrounding whitespace. The error names the file, never its content.
func TokenFromFile(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("token file %s is empty", path)
	}
	return token, nil
}
