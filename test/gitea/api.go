package gitea

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CreateRepo creates an empty public repository name owned by the admin,
// with main as its default branch.
func (s *Server) CreateRepo(ctx context.Context, name string) error {
	body := map[string]any{"name": name, "default_branch": "main", "auto_init": false, "private": false}
	// Creating a repository needs the write:user scope, which Token
	// lacks on purpose: the admin's password does it.
	if err := s.api(ctx, byPassword, http.MethodPost, "/user/repos", body, nil); err != nil {
		return fmt.Errorf("gitea repo %s: create: %w", name, err)
	}
	return nil
}

// Hook is a webhook as Gitea lists it.
type Hook struct {
	ID     int64             `json:"id"`
	Type   string            `json:"type"`
	Events []string          `json:"events"`
	Active bool              `json:"active"`
	Config map[string]string `json:"config"`
}

// AddWebhook adds a Gitea-type webhook on push events to repo, delivering
// JSON to target, signed with secret (X-Gitea-Signature, HMAC-SHA256 of the
// body in hex).
func (s *Server) AddWebhook(ctx context.Context, repo, target, secret string) (*Hook, error) {
	body := map[string]any{
		"type":          "gitea",
		"active":        true,
		"events":        []string{"push"},
		"branch_filter": "*",
		"config":        map[string]string{"url": target, "content_type": "json", "secret": secret},
	}
	var hook Hook
	if err := s.api(ctx, byToken, http.MethodPost, s.repoPath(repo)+"/hooks", body, &hook); err != nil {
		return nil, fmt.Errorf("gitea repo %s: add webhook: %w", repo, err)
	}
	return &hook, nil
}

// CommitStatus is a commit status as Gitea's API returns it.
type CommitStatus struct {
	ID          int64     `json:"id"`
	State       string    `json:"status"`
	Context     string    `json:"context"`
	Description string    `json:"description"`
	TargetURL   string    `json:"target_url"`
	Created     time.Time `json:"created_at"`
	Creator     struct {
		Login string `json:"login"`
	} `json:"creator"`
}

// Statuses lists every status posted on sha in repo, oldest first.
func (s *Server) Statuses(ctx context.Context, repo, sha string) ([]CommitStatus, error) {
	var list []CommitStatus
	q := url.Values{"sort": {"oldest"}, "limit": {"50"}}
	if err := s.api(ctx, byToken, http.MethodGet, s.repoPath(repo)+"/statuses/"+url.PathEscape(sha)+"?"+q.Encode(), nil, &list); err != nil {
		return nil, fmt.Errorf("gitea repo %s: statuses of %s: %w", repo, sha, err)
	}
	return list, nil
}

func (s *Server) repoPath(repo string) string {
	return "/repos/" + url.PathEscape(s.admin) + "/" + url.PathEscape(repo)
}

// credential says how an API call authenticates.
type credential int

const (
	byToken credential = iota
	byPassword
)

// api calls Gitea's REST API; out, when set, receives the decoded JSON
// answer.
func (s *Server) api(ctx context.Context, cred credential, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.URL+"/api/v1"+path, body)
	if err != nil {
		return err
	}
	if cred == byPassword {
		req.SetBasicAuth(s.admin, s.password)
	} else {
		req.Header.Set("Authorization", "token "+s.token)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		excerpt := strings.Join(strings.Fields(string(data)), " ")
		if len(excerpt) > 300 {
			excerpt = excerpt[:300] + "…"
		}
		return fmt.Errorf("%s %s: HTTP %s: %s", method, path, resp.Status, excerpt)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}
