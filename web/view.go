package web

import (
	"crypto/subtle"
	"embed"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/refit-gitops/refit/story"
)

//go:embed assets
var assets embed.FS

// Options are the view's settings. Start with DefaultOptions.
type Options struct {
	// Token, if set, is required as a bearer token (Authorization header,
	// the cookie set from ?token=, or ?token= itself).
	Token string
	// Recent is how many ended rollouts are kept.
	Recent int
	// Clients caps the browsers following /events at once; beyond it
	// one gets 503.
	Clients int
	// WriteTimeout drops a client that does not take an update within it.
	WriteTimeout time.Duration
	// Heartbeat is how often an idle stream sends a comment, so a client
	// gone away is noticed and proxies keep the stream open.
	Heartbeat time.Duration
}

// DefaultOptions: no token, 20 rollouts, 32 clients.
func DefaultOptions() Options {
	return Options{Recent: 20, Clients: 32, WriteTimeout: 10 * time.Second, Heartbeat: 15 * time.Second}
}

// View keeps the state the events tell and serves it.
type View struct {
	opts  Options
	page  *template.Template
	files http.Handler

	mu      sync.Mutex
	state   State
	clients map[chan struct{}]struct{}
}

var (
	_ story.Sink   = (*View)(nil)
	_ http.Handler = (*View)(nil)
)

// New returns a view with nothing to show yet.
func New(opts Options) *View {
	d := DefaultOptions()
	if opts.Recent <= 0 {
		opts.Recent = d.Recent
	}
	if opts.Clients <= 0 {
		opts.Clients = d.Clients
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = d.WriteTimeout
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = d.Heartbeat
	}
	static, _ := fs.Sub(assets, "assets") // the embedded folder exists: cannot fail
	return &View{
		opts:    opts,
		page:    template.Must(template.New("").Funcs(funcs).ParseFS(assets, "assets/*.html")),
		files:   http.StripPrefix("/assets/", http.FileServerFS(static)),
		clients: map[chan struct{}]struct{}{},
	}
}

// Emit implements story.Sink: it updates the state and wakes the clients.
// It never blocks on a client: each has a one-slot signal, and a client
// behind by several events gets the latest state once.
func (v *View) Emit(e story.Event) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.state.apply(e, v.opts.Recent)
	for c := range v.clients {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// State returns a copy of what the view shows now.
func (v *View) State() State {
	v.mu.Lock()
	defer v.mu.Unlock()
	return copyState(&v.state)
}

// ServeHTTP serves / (the page), /events (server-sent events), /state.json
// and /assets/.
func (v *View) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	if !v.authorize(w, r) {
		return
	}
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	// Everything comes from here: no external asset can be loaded.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")
	switch {
	case r.URL.Path == "/":
		v.servePage(w)
	case r.URL.Path == "/events":
		v.serveEvents(w, r)
	case r.URL.Path == "/state.json":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(v.State())
	case strings.HasPrefix(r.URL.Path, "/assets/") && !strings.HasSuffix(r.URL.Path, ".html"):
		v.files.ServeHTTP(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (v *View) servePage(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	st := v.State()
	_ = v.page.ExecuteTemplate(w, "page.html", st)
}

// cookie carries the token once a browser gave it as ?token=.
const cookie = "refit_view"

// authorize answers 401 unless the request carries the token. A ?token=
// sets the cookie and redirects to the same address without it, so the
// token does not stay in the address bar or the history.
func (v *View) authorize(w http.ResponseWriter, r *http.Request) bool {
	if v.opts.Token == "" {
		return true
	}
	if q := r.URL.Query().Get("token"); q != "" && v.match(q) {
		http.SetCookie(w, &http.Cookie{Name: cookie, Value: q, Path: "/", HttpOnly: true,
			SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
		u := *r.URL
		qs := u.Query()
		qs.Del("token")
		u.RawQuery = qs.Encode()
		http.Redirect(w, r, u.RequestURI(), http.StatusSeeOther)
		return false
	}
	if t, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok && v.match(t) {
		return true
	}
	if c, err := r.Cookie(cookie); err == nil && v.match(c.Value) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="refit"`)
	http.Error(w, "the view needs its token (Authorization: Bearer, or ?token= once)", http.StatusUnauthorized)
	return false
}

func (v *View) match(t string) bool {
	return subtle.ConstantTimeCompare([]byte(t), []byte(v.opts.Token)) == 1
}

var funcs = template.FuncMap{
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
	"firstLine": func(s string) string {
		s, _, _ = strings.Cut(s, "\n")
		return s
	},
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"round": func(d time.Duration) string {
		if d >= time.Second {
			return d.Round(100 * time.Millisecond).String()
		}
		return d.Round(time.Millisecond).String()
	},
	"perPod": func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"lower":  strings.ToLower,
}
