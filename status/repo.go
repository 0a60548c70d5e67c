package status

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// repository is where a repository lives, read from the URL refit clones it
// from: https://host/owner/repo(.git), ssh://git@host/owner/repo.git or
// git@host:owner/repo.git.
type repository struct {
	// scheme is "https" or "http" for web URLs, "ssh" for SSH ones.
	scheme string
	// host is the web host with its port; an SSH URL's port belongs to
	// its SSH server, so it is dropped there.
	host string
	// path is owner/repo, or group/subgroup/project on GitLab, without
	// ".git" and without slashes around it.
	path string
}

// webBase is the repository host's web root, the default API base of
// self-hosted Gitea and GitLab: an SSH URL's host is assumed to serve HTTPS.
func (r repository) webBase() string {
	if r.scheme == "http" || r.scheme == "https" {
		return r.scheme + "://" + r.host
	}
	return "https://" + r.host
}

// parseRepoURL reads a clone URL. Credentials in it are dropped and never
// appear in an error.
func parseRepoURL(raw string) (repository, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return repository{}, errors.New("repository URL is empty")
	}
	if !strings.Contains(raw, "://") {
		return parseSCPLike(raw)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return repository{}, fmt.Errorf("repository URL %s is not a URL", redactURL(raw))
	}
	r := repository{scheme: strings.ToLower(u.Scheme)}
	switch r.scheme {
	case "http", "https":
		r.host = u.Host
	case "ssh", "git+ssh", "ssh+git":
		r.scheme = "ssh"
		r.host = u.Hostname()
	default:
		return repository{}, fmt.Errorf("repository URL %s: unsupported scheme %q (want https, http or ssh)", redactURL(raw), u.Scheme)
	}
	if u.Hostname() == "" {
		return repository{}, fmt.Errorf("repository URL %s has no host", redactURL(raw))
	}
	if r.path, err = cleanRepoPath(u.Path); err != nil {
		return repository{}, fmt.Errorf("repository URL %s: %w", redactURL(raw), err)
	}
	return r, nil
}

// parseSCPLike reads git's scp-like syntax, [user@]host:path.
func parseSCPLike(raw string) (repository, error) {
	rest := raw[scpUserEnd(raw):]
	host, path, ok := strings.Cut(rest, ":")
	if !ok || host == "" || strings.Contains(host, "/") {
		return repository{}, fmt.Errorf("repository URL %s is neither a URL nor host:path", redactURL(raw))
	}
	p, err := cleanRepoPath(path)
	if err != nil {
		return repository{}, fmt.Errorf("repository URL %s: %w", redactURL(raw), err)
	}
	return repository{scheme: "ssh", host: host, path: p}, nil
}

func cleanRepoPath(p string) (string, error) {
	p = strings.Trim(p, "/")
	p = strings.TrimSuffix(p, ".git")
	segs := strings.Split(p, "/")
	if len(segs) < 2 {
		return "", errors.New("want an owner/repo path")
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("path %q has an empty or relative segment", p)
		}
	}
	return p, nil
}

// stripPrefix removes the path a host is served under (e.g. "gitea" in
// https://host/gitea/owner/repo) from a repository path, when it is there.
func stripPrefix(repoPath, prefix string) string {
	prefix = strings.Trim(prefix, "/")
	if prefix != "" && strings.HasPrefix(repoPath, prefix+"/") {
		return strings.TrimPrefix(repoPath, prefix+"/")
	}
	return repoPath
}

// ownerRepo splits a path that must be exactly owner/repo.
func ownerRepo(p string) (string, string, error) {
	owner, name, ok := strings.Cut(p, "/")
	if !ok || strings.Contains(name, "/") {
		return "", "", fmt.Errorf("repository path %q: want owner/repo", p)
	}
	return owner, name, nil
}

// parseAPIURL checks an API base URL override; credentials are dropped.
func parseAPIURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("API URL %s: want an http(s) URL", redactURL(raw))
	}
	u.User = nil
	u.RawQuery, u.Fragment = "", ""
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// redactURL drops the user information of a URL, or of anything that looks
// like one, so a token in it cannot reach an error or a log line.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.User != nil {
		u.User = nil
		return u.String()
	}
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw[scpUserEnd(raw):]
	}
	authority, path, _ := strings.Cut(rest, "/")
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		authority = authority[at+1:]
	}
	if path == "" && !strings.HasSuffix(rest, "/") {
		return scheme + "://" + authority
	}
	return scheme + "://" + authority + "/" + path
}

// scpUserEnd is where the host starts in [user[:password]@]host:path: after
// the last "@" before the first "/".
func scpUserEnd(raw string) int {
	head := raw
	if i := strings.Index(raw, "/"); i >= 0 {
		head = raw[:i]
	}
	return strings.LastIndex(head, "@") + 1
}

// userinfoRE matches the credentials of a URL inside any text: the scheme,
// then user[:password]@ before the host.
var userinfoRE = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s@]+@`)

// RedactURLs drops the credentials of every URL in s (an error that quotes
// a clone URL with a token in it), keeping the rest of the text.
func RedactURLs(s string) string {
	return userinfoRE.ReplaceAllString(s, "${1}")
}
