package gitserver

import (
	"net/http"
	"strings"
	"sync"
)

// Counts are the Git requests the HTTP server answered for one
// repository: ref listings (GET info/refs, which every fetch also starts
// with) and fetches (POST git-upload-pack, the pack download).
type Counts struct {
	Lists   int
	Fetches int
}

// counter counts requests per repository, as the server saw them.
type counter struct {
	mu     sync.Mutex
	byRepo map[string]Counts
}

func (c *counter) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		if rec.status >= 300 {
			return // refused (unauthorized): nothing was listed or sent
		}
		p := strings.TrimPrefix(r.URL.Path, "/")
		switch {
		case r.Method == http.MethodGet && strings.HasSuffix(p, "/info/refs") && r.URL.Query().Get("service") == "git-upload-pack":
			c.add(strings.TrimSuffix(p, "/info/refs"), func(n *Counts) { n.Lists++ })
		case r.Method == http.MethodPost && strings.HasSuffix(p, "/git-upload-pack"):
			c.add(strings.TrimSuffix(p, "/git-upload-pack"), func(n *Counts) { n.Fetches++ })
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// Flush keeps streaming responses streaming.
func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (c *counter) add(repo string, f func(*Counts)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byRepo == nil {
		c.byRepo = map[string]Counts{}
	}
	n := c.byRepo[repo]
	f(&n)
	c.byRepo[repo] = n
}

// Counts returns the HTTP requests served so far for the repository name
// (as given to CreateRepo or NewRepo).
func (s *Server) Counts(name string) Counts {
	s.count.mu.Lock()
	defer s.count.mu.Unlock()
	return s.count.byRepo[repoDir(name)]
}
