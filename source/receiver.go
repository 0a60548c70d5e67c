package source

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Provider names how a webhook is signed.
type Provider string

const (
	// GitHub signs the body: X-Hub-Signature-256: sha256=<hex HMAC-SHA256>.
	GitHub Provider = "github"
	// GitLab sends the shared secret: X-Gitlab-Token.
	GitLab Provider = "gitlab"
	// Gitea signs the body: X-Gitea-Signature: <hex HMAC-SHA256>.
	Gitea Provider = "gitea"
	// Generic sends the shared secret: Authorization: Bearer <token>.
	Generic Provider = "generic"
)

// Trigger asks for a poll. Fire never blocks, and any number of fires before
// the poller reads C come out as one: a flood of hooks is one poll.
type Trigger struct{ ch chan struct{} }

// NewTrigger returns a Trigger with nothing pending.
func NewTrigger() *Trigger { return &Trigger{ch: make(chan struct{}, 1)} }

// Fire requests a poll.
func (t *Trigger) Fire() {
	select {
	case t.ch <- struct{}{}:
	default: // one is already pending
	}
}

// C delivers a value when a poll was requested.
func (t *Trigger) C() <-chan struct{} { return t.ch }

// Hook is one webhook the Receiver accepts.
type Hook struct {
	// Path the hook is served on (e.g. /hooks/app). Several hooks may share
	// a path; each is checked with its own secret and repository.
	Path     string
	Provider Provider
	// Secret is the HMAC key or shared token, at least MinSecretLen bytes.
	Secret string
	// RepoURL must match the repository the payload names (any of its
	// clone, SSH or web URLs; scheme, user, port and ".git" are ignored).
	// A payload naming no repository, or another one, triggers nothing.
	// Required except for Generic hooks, whose empty-bodied request is a
	// plain "poll now".
	RepoURL string
	Trigger *Trigger
	// Reload, when set, reads the secret again: a request whose
	// credential matches no hook of its path has each hook's secret
	// reloaded (at most once every ReceiverOptions.ReloadEvery) and checked
	// again, so a rotated secret takes effect at its first delivery.
	Reload func(ctx context.Context) (string, error)
}

// MinSecretLen is the shortest webhook secret accepted, in bytes: a
// shorter one can be guessed offline from one signed delivery (HMAC) or
// online at the rate the listener allows (token).
const MinSecretLen = 16

// ReceiverOptions bound what the Receiver accepts.
type ReceiverOptions struct {
	// MaxBody is the largest body accepted (bytes).
	MaxBody int64
	// Deliveries is how many delivery IDs are remembered to drop replays.
	Deliveries int
	// ReloadEvery is the least time between two reloads of a hook's
	// secret (Hook.Reload): a flood of bad signatures reads it at most
	// this often.
	ReloadEvery time.Duration
}

// DefaultReceiverOptions: GitHub caps payloads at 25 MB, but push payloads
// are a few kB; 1 MiB leaves room for large pushes.
func DefaultReceiverOptions() ReceiverOptions {
	return ReceiverOptions{MaxBody: 1 << 20, Deliveries: 4096, ReloadEvery: 10 * time.Second}
}

// Receiver is an http.Handler for Git host webhooks. A request that is
// signed for a hook fires the hook's Trigger. Signatures are checked in
// constant time. A replayed delivery ID is acknowledged and ignored; a
// replay under a new ID can at worst cause one extra poll. Hooks can be
// set and removed while it serves (Set): apps come and go.
type Receiver struct {
	opts ReceiverOptions
	now  func() time.Time

	hooksMu sync.RWMutex
	owned   map[string][]*ownedHook // by owner (Set)
	hooks   map[string][]*ownedHook // by path

	mu   sync.Mutex
	seen map[string]bool
	ring []string
	next int
}

// ownedHook is a hook and what the Receiver keeps of it.
type ownedHook struct {
	Hook
	owner string
	// reloaded is when Reload was last called (hooksMu).
	reloaded time.Time
}

// NewReceiver checks the hooks and returns a Receiver serving them.
func NewReceiver(opts ReceiverOptions, hooks ...Hook) (*Receiver, error) {
	def := DefaultReceiverOptions()
	if opts.MaxBody <= 0 {
		opts.MaxBody = def.MaxBody
	}
	if opts.Deliveries <= 0 {
		opts.Deliveries = def.Deliveries
	}
	if opts.ReloadEvery <= 0 {
		opts.ReloadEvery = def.ReloadEvery
	}
	r := &Receiver{opts: opts, now: time.Now, owned: map[string][]*ownedHook{}, hooks: map[string][]*ownedHook{},
		seen: map[string]bool{}, ring: make([]string, opts.Deliveries)}
	if err := r.Set("", hooks...); err != nil {
		return nil, err
	}
	return r, nil
}

// Set replaces the hooks of owner (an app) with hooks; none removes them.
// Nothing changes when one of them is invalid.
func (r *Receiver) Set(owner string, hooks ...Hook) error {
	owned := make([]*ownedHook, 0, len(hooks))
	for _, h := range hooks {
		if err := checkHook(h); err != nil {
			return err
		}
		owned = append(owned, &ownedHook{Hook: h, owner: owner})
	}
	r.hooksMu.Lock()
	defer r.hooksMu.Unlock()
	if len(owned) == 0 {
		delete(r.owned, owner)
	} else {
		r.owned[owner] = owned
	}
	r.hooks = map[string][]*ownedHook{}
	for _, hs := range r.owned {
		for _, h := range hs {
			r.hooks[h.Path] = append(r.hooks[h.Path], h)
		}
	}
	return nil
}

func checkHook(h Hook) error {
	switch {
	case !strings.HasPrefix(h.Path, "/"):
		return fmt.Errorf("hook %q: path must start with /", h.Path)
	case h.Secret == "":
		return fmt.Errorf("hook %s: secret is required", h.Path)
	case len(h.Secret) < MinSecretLen:
		return fmt.Errorf("hook %s: secret is %d bytes, want at least %d", h.Path, len(h.Secret), MinSecretLen)
	case h.Trigger == nil:
		return fmt.Errorf("hook %s: trigger is required", h.Path)
	}
	switch h.Provider {
	case GitHub, GitLab, Gitea:
		if h.RepoURL == "" {
			return fmt.Errorf("hook %s: repository URL is required: a %s payload is matched by its repository", h.Path, h.Provider)
		}
	case Generic:
	default:
		return fmt.Errorf("hook %s: unknown provider %q", h.Path, h.Provider)
	}
	if h.RepoURL != "" && repoKey(h.RepoURL) == "" {
		return fmt.Errorf("hook %s: repository URL %s names no repository", h.Path, scrub(h.RepoURL))
	}
	return nil
}

// onPath returns copies of the hooks served on path.
func (r *Receiver) onPath(path string) ([]Hook, bool) {
	r.hooksMu.RLock()
	defer r.hooksMu.RUnlock()
	owned, ok := r.hooks[path]
	hooks := make([]Hook, len(owned))
	for i, h := range owned {
		hooks[i] = h.Hook
	}
	return hooks, ok
}

func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	hooks, ok := r.onPath(req.URL.Path)
	if !ok {
		http.NotFound(w, req)
		return
	}
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if req.ContentLength > r.opts.MaxBody {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.opts.MaxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "cannot read body", http.StatusBadRequest)
		return
	}
	status, msg := r.dispatch(req, body, hooks)
	http.Error(w, msg, status)
}

// dispatch verifies the request against each hook on its path and fires
// the ones it is for.
func (r *Receiver) dispatch(req *http.Request, body []byte, hooks []Hook) (int, string) {
	var verified []Hook
	worst := http.StatusUnauthorized // no credential for any hook
	for _, h := range hooks {
		switch status := verify(h, req, body); status {
		case http.StatusOK:
			verified = append(verified, h)
		case http.StatusBadRequest, http.StatusForbidden:
			if worst != http.StatusBadRequest {
				worst = status
			}
		}
	}
	if len(verified) == 0 && worst == http.StatusForbidden {
		// A wrong credential may be a rotated secret refit has not read.
		verified = r.reloaded(req, body)
	}
	if len(verified) == 0 {
		return worst, http.StatusText(worst)
	}
	if isPing(req) {
		return http.StatusOK, "pong"
	}
	if id := deliveryID(req); id != "" && r.replayed(id) {
		return http.StatusOK, "duplicate delivery ignored"
	}
	var urls []string
	if len(body) > 0 {
		var err error
		if urls, err = payloadRepoURLs(body); err != nil {
			return http.StatusBadRequest, "malformed payload"
		}
	}
	fired := 0
	for _, h := range verified {
		if fires(h, body, urls) {
			h.Trigger.Fire()
			fired++
		}
	}
	switch {
	case fired > 0:
		return http.StatusAccepted, "poll requested"
	case len(urls) == 0:
		return http.StatusOK, "payload names no repository: nothing triggered"
	default:
		return http.StatusOK, "no matching repository"
	}
}

// fires says whether a verified delivery is for h: its payload names h's
// repository. Only a Generic hook with an empty body (a plain "poll now",
// e.g. from CI) fires without one.
func fires(h Hook, body []byte, urls []string) bool {
	if h.Provider == Generic && len(body) == 0 {
		return true
	}
	return h.RepoURL != "" && matchesAny(h.RepoURL, urls)
}

// verify returns 200 when req carries h's credential, 401 when it carries
// none, 400 when it is malformed and 403 when it is wrong.
func verify(h Hook, req *http.Request, body []byte) int {
	switch h.Provider {
	case GitHub:
		sig := req.Header.Get("X-Hub-Signature-256")
		if sig == "" {
			return http.StatusUnauthorized
		}
		hexSig, ok := strings.CutPrefix(sig, "sha256=")
		if !ok {
			return http.StatusBadRequest
		}
		return checkHMAC(h.Secret, body, hexSig)
	case Gitea:
		sig := req.Header.Get("X-Gitea-Signature")
		if sig == "" {
			return http.StatusUnauthorized
		}
		return checkHMAC(h.Secret, body, sig)
	case GitLab:
		tok := req.Header.Get("X-Gitlab-Token")
		if tok == "" {
			return http.StatusUnauthorized
		}
		return checkToken(h.Secret, tok)
	case Generic:
		auth := req.Header.Get("Authorization")
		if auth == "" {
			return http.StatusUnauthorized
		}
		tok, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok {
			return http.StatusBadRequest
		}
		return checkToken(h.Secret, tok)
	}
	return http.StatusUnauthorized
}

func checkHMAC(secret string, body []byte, hexSig string) int {
	got, err := hex.DecodeString(hexSig)
	if err != nil || len(got) != sha256.Size {
		return http.StatusBadRequest
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return http.StatusForbidden
	}
	return http.StatusOK
}

func checkToken(secret, tok string) int {
	if subtle.ConstantTimeCompare([]byte(secret), []byte(tok)) != 1 {
		return http.StatusForbidden
	}
	return http.StatusOK
}

func isPing(req *http.Request) bool {
	return req.Header.Get("X-GitHub-Event") == "ping"
}

func deliveryID(req *http.Request) string {
	for _, h := range []string{"X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gitlab-Event-UUID"} {
		if v := req.Header.Get(h); v != "" {
			return h + ":" + v
		}
	}
	return ""
}

// replayed records id and says whether it was seen before. Only deliveries
// that passed verification are recorded, so unsigned requests cannot fill
// the memory with IDs to block real deliveries.
func (r *Receiver) replayed(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[id] {
		return true
	}
	if old := r.ring[r.next]; old != "" {
		delete(r.seen, old)
	}
	r.ring[r.next] = id
	r.next = (r.next + 1) % len(r.ring)
	r.seen[id] = true
	return false
}

// payloadRepoURLs reads the repository URLs GitHub, Gitea and GitLab put in
// push and tag events: the clone, SSH and web addresses the host sets
// itself. Fields a repository owner can set (GitHub's homepage) and API
// addresses (Gitea's url) are not read.
func payloadRepoURLs(body []byte) ([]string, error) {
	var p struct {
		Repository map[string]any `json:"repository"`
		Project    map[string]any `json:"project"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, err
	}
	var urls []string
	for _, m := range []map[string]any{p.Repository, p.Project} {
		for _, k := range []string{"clone_url", "ssh_url", "html_url", "git_url", "git_http_url", "git_ssh_url", "web_url"} {
			if s, ok := m[k].(string); ok && s != "" {
				urls = append(urls, s)
			}
		}
	}
	return urls, nil
}

func matchesAny(repoURL string, urls []string) bool {
	want := repoKey(repoURL)
	if want == "" {
		return false
	}
	for _, u := range urls {
		if repoKey(u) == want {
			return true
		}
	}
	return false
}

// repoKey reduces a repository URL to lower-case host/path, so the HTTPS,
// SSH and web URLs of one repository compare equal; "" when it names no
// repository (no path), which matches nothing.
func repoKey(u string) string {
	ep, err := transport.NewEndpoint(strings.TrimSpace(u))
	if err != nil {
		return ""
	}
	path := strings.TrimSuffix(strings.Trim(ep.Path, "/"), ".git")
	if path == "" {
		return ""
	}
	return strings.ToLower(ep.Host + "/" + path)
}

// reloaded reloads the secrets of the hooks on req's path that may be
// reloaded now, and returns those the request is signed for with their
// new secret.
func (r *Receiver) reloaded(req *http.Request, body []byte) []Hook {
	now := r.now()
	r.hooksMu.Lock()
	var due []*ownedHook
	for _, h := range r.hooks[req.URL.Path] {
		if h.Reload != nil && (h.reloaded.IsZero() || now.Sub(h.reloaded) >= r.opts.ReloadEvery) {
			h.reloaded = now
			due = append(due, h)
		}
	}
	r.hooksMu.Unlock()
	var verified []Hook
	for _, h := range due {
		secret, err := h.Reload(req.Context())
		if err != nil || len(secret) < MinSecretLen {
			continue // the secret refit has stays
		}
		r.hooksMu.Lock()
		h.Secret = secret // h is still the owner's unless Set replaced it
		hook := h.Hook
		r.hooksMu.Unlock()
		if verify(hook, req, body) == http.StatusOK {
			verified = append(verified, hook)
		}
	}
	return verified
}
