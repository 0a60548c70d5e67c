package gitea

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/refit-gitops/refit/test/cluster"
	"github.com/refit-gitops/refit/test/toolcache"
)

// Options configure Start.
type Options struct {
	// CacheDir holds the built binary (tools/gitea-<Version>) and the
	// running instances (gitea/run-*); empty means cluster.CacheDir().
	CacheDir string
	// Log receives the build's progress lines; nil discards them.
	Log io.Writer
	// Admin is the name of the admin user that owns the repositories.
	Admin string
	// StartTimeout bounds the start once the binary is built.
	StartTimeout time.Duration
}

// DefaultOptions: admin "refit", a minute to start (a few seconds is usual).
func DefaultOptions() Options {
	return Options{Admin: "refit", StartTimeout: time.Minute}
}

// TokenScopes are the scopes of Token: what refit needs to report commit
// statuses (and to clone), so tests prove that is enough. Pushes, webhooks
// and status reads use it too; only CreateRepo needs more.
const TokenScopes = "write:repository"

// Server is a running Gitea. Its methods are safe for concurrent use.
type Server struct {
	// URL is the root URL, http://127.0.0.1:<port>.
	URL string

	admin    string
	password string
	token    string
	bin      *Binary
	dir      string
	conf     string
	logPath  string
	client   *http.Client

	cmd    *exec.Cmd
	exited chan struct{}

	mu    sync.Mutex
	repos map[string]*workRepo

	closeOnce sync.Once
	closeErr  error
}

// Start builds Gitea if needed and starts it on a free loopback port with
// SQLite in a new folder, then creates the admin user and its token. An
// instance left behind by a test process that was killed is stopped first.
// Close stops it and removes its data.
func Start(ctx context.Context, opts Options) (*Server, error) {
	def := DefaultOptions()
	if opts.Admin == "" {
		opts.Admin = def.Admin
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = def.StartTimeout
	}
	cacheDir := opts.CacheDir
	if cacheDir == "" {
		var err error
		if cacheDir, err = cluster.CacheDir(); err != nil {
			return nil, err
		}
	}
	bin, err := EnsureBinary(ctx, cacheDir, opts.Log)
	if err != nil {
		return nil, err
	}
	runs := filepath.Join(cacheDir, "gitea")
	if err := os.MkdirAll(runs, 0o755); err != nil {
		return nil, fmt.Errorf("gitea: %w", err)
	}
	stopOrphans(runs)
	dir, err := os.MkdirTemp(runs, "run-")
	if err != nil {
		return nil, fmt.Errorf("gitea: %w", err)
	}
	s := &Server{admin: opts.Admin, password: randomHex(16), bin: bin, dir: dir,
		client: &http.Client{Timeout: 30 * time.Second}, repos: map[string]*workRepo{}}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()
	if err := s.start(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Server) start(ctx context.Context) error {
	// The owner record lets a later Start tell a live instance of another
	// test process from one whose process was killed.
	if err := writeRecord(filepath.Join(s.dir, "owner.pid"), os.Getpid()); err != nil {
		return fmt.Errorf("gitea: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	runUser, err := user.Current()
	if err != nil {
		return fmt.Errorf("gitea: current user: %w", err)
	}
	s.conf = filepath.Join(s.dir, "app.ini")
	ini := appINI(iniParams{
		RunUser: runUser.Username, Root: runUser.Uid == "0", Dir: s.dir, StaticDir: s.bin.StaticDir, Port: port,
		SecretKey: randomHex(32), InternalToken: randomHex(32),
	})
	if err := os.WriteFile(s.conf, []byte(ini), 0o600); err != nil {
		return fmt.Errorf("gitea: %w", err)
	}
	s.logPath = filepath.Join(s.dir, "gitea.log")
	if err := s.startWeb(); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		return err
	}
	// The CLI writes to the same SQLite database as the running server;
	// the server has created the schema by now.
	return s.createAdmin(ctx)
}

// startWeb starts "gitea web" in its own process group (Close ends it and
// the git processes it runs; a Ctrl-C in the terminal does not reach it
// before Close runs). Pdeathsig kills it should the test process die
// without closing it; the goroutine keeps its OS thread locked for the
// process's life because Linux sends that signal when the thread that
// started the child exits, not the process.
func (s *Server) startWeb() error {
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return fmt.Errorf("gitea: %w", err)
	}
	started := make(chan error, 1)
	s.exited = make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logFile.Close()
		cmd := s.command("web")
		cmd.Stdout, cmd.Stderr = logFile, logFile
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- fmt.Errorf("gitea: start %s: %w", s.bin.Path, err)
			close(s.exited)
			return
		}
		s.cmd = cmd
		started <- writeRecord(filepath.Join(s.dir, "gitea.pid"), cmd.Process.Pid)
		_ = cmd.Wait()
		close(s.exited)
	}()
	return <-started
}

// command is a gitea command on this instance's configuration, with an
// environment free of the caller's Git and Gitea variables.
func (s *Server) command(args ...string) *exec.Cmd {
	// WORK_PATH is in the configuration: Gitea complains when a flag
	// repeats it.
	full := append([]string{"--config", s.conf, "--custom-path", filepath.Join(s.dir, "custom")}, args...)
	cmd := exec.Command(s.bin.Path, full...)
	cmd.Dir = s.dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "GITEA_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+filepath.Join(s.dir, "home"))
	return cmd
}

func (s *Server) waitReady(ctx context.Context) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/api/v1/version", nil)
		if err != nil {
			return err
		}
		if resp, err := s.client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("gitea exited before it served %s; log %s:\n%s", s.URL, s.logPath, s.LogTail())
		case <-ctx.Done():
			return fmt.Errorf("gitea: not serving %s: %w; log %s:\n%s", s.URL, ctx.Err(), s.logPath, s.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// createAdmin creates the admin user and its access token with the CLI.
func (s *Server) createAdmin(ctx context.Context) error {
	cmd := s.command("admin", "user", "create", "--username", s.admin, "--password", s.password,
		"--email", s.admin+"@refit.test", "--admin", "--must-change-password=false",
		"--access-token", "--access-token-name", "refit", "--access-token-scopes", TokenScopes)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := runContext(ctx, cmd)
	if err != nil {
		// The command line and so possibly the output hold the password.
		return fmt.Errorf("gitea: admin user create: %w\n%s", err, toolcache.LastLines(strings.ReplaceAll(string(out), s.password, "[redacted]"), 20))
	}
	const marker = "Access token was successfully created... "
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if tok, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), marker); ok {
			s.token = strings.TrimSpace(tok)
			return nil
		}
	}
	return errors.New("gitea: admin user create printed no access token")
}

// runContext runs cmd, ended (with its process group) when ctx is done.
func runContext(ctx context.Context, cmd *exec.Cmd) ([]byte, error) {
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return []byte(out.String()), err
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		return []byte(out.String()), ctx.Err()
	}
}

// Token is the admin's access token, scoped to TokenScopes.
func (s *Server) Token() string { return s.token }

// Admin is the admin user, the owner of the repositories CreateRepo makes.
func (s *Server) Admin() string { return s.admin }

// Dir is the instance's folder (configuration, SQLite database,
// repositories, log); Close removes it.
func (s *Server) Dir() string { return s.dir }

// Pid is the gitea web process's id (and process group id).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// RepoURL is the HTTP clone URL of the admin's repository name.
func (s *Server) RepoURL(name string) string {
	return s.URL + "/" + s.admin + "/" + name + ".git"
}

// LogTail is the end of Gitea's log, for failure messages.
func (s *Server) LogTail() string {
	data, _ := os.ReadFile(s.logPath)
	return toolcache.LastLines(string(data), 20)
}

// Close stops Gitea and every process in its group, and removes its data.
// It may be called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			stopGroup(s.cmd.Process.Pid, s.exited)
		}
		if err := os.RemoveAll(s.dir); err != nil {
			s.closeErr = fmt.Errorf("gitea: remove %s: %w", s.dir, err)
		}
	})
	return s.closeErr
}

// stopGroup sends SIGTERM to process group pid, waits up to ten seconds for
// the leader to exit (exited closes, or, with a nil channel, the pid is
// gone) and then sends SIGKILL to whatever is left of the group.
func stopGroup(pid int, exited <-chan struct{}) {
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	deadline := time.After(10 * time.Second)
wait:
	for {
		if exited == nil && !processAlive(pid) {
			break
		}
		select {
		case <-exited:
			break wait
		case <-deadline:
			break wait
		case <-time.After(50 * time.Millisecond):
		}
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	if exited != nil {
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("gitea: find a free port: %w", err)
	}
	defer l.Close()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("gitea: find a free port: not a TCP address")
	}
	return addr.Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
