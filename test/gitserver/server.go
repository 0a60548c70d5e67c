package gitserver

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fluxcd/gitkit"
	"github.com/fluxcd/pkg/gittestserver"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Options configure a Server. The zero value serves anonymous HTTP and SSH
// with the generated client key.
type Options struct {
	// Username and Password, when Username is set, are required on HTTP
	// (basic auth); BearerToken, when set, is accepted as well.
	Username string
	Password string
	// BearerToken, when set, is required on HTTP unless basic auth
	// credentials match.
	BearerToken string
	// Dir holds the bare repositories; empty means a new temporary
	// directory that Close removes.
	Dir string
	// DefaultBranch is the branch new repositories start on ("main").
	DefaultBranch string
}

// DefaultOptions turns on HTTP authentication with a fresh random password
// and token, so a test proves its client really sends credentials.
func DefaultOptions() Options {
	return Options{
		Username:    "refit",
		Password:    randomHex(12),
		BearerToken: randomHex(16),
	}
}

// Server is a running Git server. Its methods are safe for concurrent use.
type Server struct {
	// mu guards opts.Password, which SetPassword changes while serving.
	mu      sync.Mutex
	opts    Options
	root    string
	ownRoot bool

	http  *gittestserver.GitServer
	ssh   *gitkit.SSH
	count counter

	sshAddress string
	knownHosts []byte
	clientKey  []byte
	clientPub  string

	serving   bool
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New starts a Server for a test and stops it when the test ends.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("start git server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("stop git server: %v", err)
		}
	})
	return s
}

// Start starts HTTP and SSH servers on random loopback ports.
func Start(opts Options) (_ *Server, err error) {
	if opts.DefaultBranch == "" {
		opts.DefaultBranch = "main"
	}
	s := &Server{opts: opts, root: opts.Dir, serveDone: make(chan struct{})}
	if s.root == "" {
		if s.root, err = os.MkdirTemp("", "refit-gitserver-"); err != nil {
			return nil, fmt.Errorf("git server: %w", err)
		}
		s.ownRoot = true
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	repos := filepath.Join(s.root, "repos")
	if err := os.MkdirAll(repos, 0o755); err != nil {
		return nil, fmt.Errorf("git server: %w", err)
	}
	if err := s.startHTTP(repos); err != nil {
		return nil, fmt.Errorf("git server: start http: %w", err)
	}
	if err := s.startSSH(repos); err != nil {
		return nil, fmt.Errorf("git server: start ssh: %w", err)
	}
	return s, nil
}

func (s *Server) startHTTP(repos string) error {
	s.http = gittestserver.NewGitServer(repos)
	// Authentication is a middleware rather than gittestserver's Auth, which
	// knows neither bearer tokens nor separate HTTP and SSH settings.
	s.http.AddHTTPMiddlewares(s.authMiddleware, s.count.middleware)
	return s.http.StartHTTP()
}

func (s *Server) authMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Username == "" && s.opts.BearerToken == "" {
			next.ServeHTTP(w, r)
			return
		}
		if user, pass, ok := r.BasicAuth(); ok && s.opts.Username != "" &&
			equal(user, s.opts.Username) && equal(pass, s.Password()) {
			next.ServeHTTP(w, r)
			return
		}
		if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok &&
			s.opts.BearerToken != "" && equal(tok, s.opts.BearerToken) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="refit-gitserver"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
	})
}

func (s *Server) startSSH(repos string) error {
	keyDir := filepath.Join(s.root, "ssh")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return err
	}
	// An ed25519 host key written where gitkit looks for its RSA key: gitkit
	// then loads it instead of spending time generating a 2048-bit RSA key.
	cfg := gitkit.Config{Dir: repos, KeyDir: keyDir, Auth: true}
	hostPub, err := writePrivateKey(cfg.KeyPath())
	if err != nil {
		return err
	}
	clientPriv, clientPub, err := newKeyPair()
	if err != nil {
		return err
	}
	s.clientKey = clientPriv
	s.clientPub = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(clientPub)))

	// gitkit directly rather than gittestserver for SSH: gittestserver keeps
	// its key lookup in a package variable that parallel servers would share.
	s.ssh = gitkit.NewSSH(cfg)
	s.ssh.PublicKeyLookupFunc = s.lookupKey
	if err := s.ssh.Listen("127.0.0.1:0"); err != nil {
		return err
	}
	s.sshAddress = s.ssh.Address()
	s.knownHosts = []byte(knownhosts.Line([]string{knownhosts.Normalize(s.sshAddress)}, hostPub) + "\n")
	s.serving = true
	go func() {
		defer close(s.serveDone)
		_ = s.ssh.Serve()
	}()
	return nil
}

func (s *Server) lookupKey(content string) (*gitkit.PublicKey, error) {
	if !equal(strings.TrimSpace(content), s.clientPub) {
		return nil, errors.New("unknown public key")
	}
	return &gitkit.PublicKey{Id: "refit-test"}, nil
}

// Close stops both servers and removes the temporary directory it made.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.http != nil {
			s.http.StopHTTP()
		}
		if s.ssh != nil {
			if err := s.ssh.Stop(); err != nil && !errors.Is(err, net.ErrClosed) {
				s.closeErr = err
			}
			if s.serving {
				<-s.serveDone
			}
		}
		if s.ownRoot {
			if err := os.RemoveAll(s.root); err != nil && s.closeErr == nil {
				s.closeErr = err
			}
		}
	})
	return s.closeErr
}

// HTTPURL is the smart-HTTP URL of a repository, without credentials.
func (s *Server) HTTPURL(repo string) string {
	return s.http.HTTPAddress() + "/" + repoDir(repo)
}

// SSHURL is the SSH URL of a repository (user git).
func (s *Server) SSHURL(repo string) string {
	return "ssh://git@" + s.sshAddress + "/" + repoDir(repo)
}

// FileURL is the file:// URL of a repository's bare directory.
func (s *Server) FileURL(repo string) string {
	return "file://" + s.RepoPath(repo)
}

// RepoPath is the bare repository's directory on disk.
func (s *Server) RepoPath(repo string) string {
	return filepath.Join(s.root, "repos", repoDir(repo))
}

// SSHAddress is host:port of the SSH server.
func (s *Server) SSHAddress() string { return s.sshAddress }

// Username, Password and BearerToken are the HTTP credentials.
func (s *Server) Username() string { return s.opts.Username }
func (s *Server) Password() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.opts.Password
}

// SetPassword rotates the HTTP password: from now on only the new one is
// accepted (a revoked token).
func (s *Server) SetPassword(password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Password = password
}

// NewPassword rotates the HTTP password to a fresh random one and returns
// it.
func (s *Server) NewPassword() string {
	p := randomHex(12)
	s.SetPassword(p)
	return p
}

func (s *Server) BearerToken() string { return s.opts.BearerToken }

// KnownHosts is a known_hosts line for the SSH server's host key.
func (s *Server) KnownHosts() []byte { return append([]byte(nil), s.knownHosts...) }

// ClientKey is a PEM (OpenSSH format) private key the SSH server accepts.
func (s *Server) ClientKey() []byte { return append([]byte(nil), s.clientKey...) }

// DefaultBranch is the branch new repositories start on.
func (s *Server) DefaultBranch() string { return s.opts.DefaultBranch }

func repoDir(name string) string {
	if strings.HasSuffix(name, ".git") {
		return name
	}
	return name + ".git"
}

func equal(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms.
	return hex.EncodeToString(b)
}

// newKeyPair makes an ed25519 key: instant to generate, unlike RSA.
func newKeyPair() ([]byte, ssh.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		return nil, nil, err
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(block), sshPub, nil
}

func writePrivateKey(path string) (ssh.PublicKey, error) {
	priv, pub, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	return pub, os.WriteFile(path, priv, 0o600)
}

// NewClientKey returns a fresh private key (PEM) that the server does not
// accept, for tests of authentication failures.
func NewClientKey() ([]byte, error) {
	priv, _, err := newKeyPair()
	return priv, err
}

// NewKnownHosts returns a known_hosts line for addr with a fresh key that is
// not the server's, for tests of host-key mismatches.
func NewKnownHosts(addr string) ([]byte, error) {
	_, pub, err := newKeyPair()
	if err != nil {
		return nil, err
	}
	return []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, pub) + "\n"), nil
}
