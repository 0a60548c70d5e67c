package status

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
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
	// Its redirect policy is replaced: a redirect is never followed.
	HTTPClient *http.Client
	// Insecure allows a plain http:// API address that is not on loopback.
	// Without it such an address is refused: the token would cross the
	// network in clear text.
	Insecure bool
	// Redact lists other secrets (Git credentials) that must never reach a
	// commit status description or an error; the token always is.
	Redact []string
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
	// baseURL is where every request goes, scheme and host included.
	baseURL() string
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
	// secrets are removed from descriptions and errors, longest first.
	secrets []string
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
	if err := checkScheme(ep.baseURL(), opts.Insecure); err != nil {
		return nil, fmt.Errorf("%s status for %s: %w", opts.Provider, repo.path, err)
	}
	var client http.Client
	if opts.HTTPClient != nil {
		client = *opts.HTTPClient // a copy: the caller's client keeps its policy
	} else {
		client.Timeout = opts.Timeout
		if client.Timeout <= 0 {
			client.Timeout = DefaultTimeout
		}
	}
	// Go drops Authorization on a cross-host redirect but forwards other
	// headers, GitLab's PRIVATE-TOKEN among them; and a same-host redirect
	// from https to http would send any of them in clear text. The API
	// address is configured, so a redirect is a configuration error: it is
	// never followed, with or without the token.
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Reporter{provider: opts.Provider, repo: repo.path, api: ep, client: &client, secrets: secretsOf(opts)}, nil
}

// checkScheme refuses a plain-http API address off loopback unless
// insecure: on loopback the token does not leave the machine.
func checkScheme(base string, insecure bool) error {
	u, err := url.Parse(base)
	if err != nil {
		return fmt.Errorf("API URL %s: %w", redactURL(base), err)
	}
	if u.Scheme == "https" || insecure || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("API URL %s: plain http sends the token in clear text; use https (or set insecure to allow it)", redactURL(base))
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// secretsOf lists what must never be shown: the token, the Basic
// credentials built from it (a host may echo the header), and opts.Redact.
func secretsOf(opts Options) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 { // shorter strings would redact ordinary words
			out = append(out, s)
		}
	}
	add(opts.Token)
	if opts.Username != "" {
		add(base64.StdEncoding.EncodeToString([]byte(opts.Username + ":" + opts.Token)))
	}
	for _, s := range opts.Redact {
		add(strings.TrimSpace(s))
	}
	// Longest first, so a secret containing another is removed whole.
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
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
	st.Description = Truncate(strings.TrimSpace(r.redact(st.Description)), MaxDescription)
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
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		return &HTTPError{
			Provider: r.provider, Repository: r.repo, Commit: st.Commit, StatusCode: resp.StatusCode,
			Body: "redirected to " + r.redact(redactURL(locationOf(resp))) + ": not followed (a token goes only to the API URL; set it to the final address)",
		}
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

// locationOf is where a redirect points, without its query (which may
// carry a signed token of the host's own).
func locationOf(resp *http.Response) string {
	loc, err := resp.Location()
	if err != nil {
		return "an unreadable location"
	}
	loc.RawQuery, loc.Fragment = "", ""
	return loc.String()
}

// excerpt is the start of a response body on one line, with the secrets
// removed should the host echo them.
func (r *Reporter) excerpt(body []byte) string {
	return Truncate(r.redact(strings.Join(strings.Fields(string(body)), " ")), 300)
}

// redact removes the secrets and any URL credentials from s.
func (r *Reporter) redact(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, "[redacted]")
	}
	return RedactURLs(s)
}

// scrubErr keeps the error chain (errors.Is on timeouts and cancellation
// still works) unless its text carries a secret.
func (r *Reporter) scrubErr(err error) error {
	if msg := r.redact(err.Error()); msg != err.Error() {
		return errors.New(msg)
	}
	return err
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
