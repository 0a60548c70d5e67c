package source_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/refit-gitops/refit/source"
	"github.com/refit-gitops/refit/test/gitserver"
)

func newPoller(t testing.TB, url string, ref source.Ref, auth source.Auth) *source.Poller {
	t.Helper()
	opts := source.DefaultOptions()
	opts.URL, opts.Ref, opts.Auth, opts.CacheDir = url, ref, auth, t.TempDir()
	opts.Timeout = 10 * time.Second
	p, err := source.NewPoller(opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func poll(t testing.TB, p *source.Poller) source.Revision {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rev, err := p.Poll(ctx)
	if err != nil {
		t.Fatalf("poll: %v", err)
	}
	return rev
}

func pollErr(t testing.TB, p *source.Poller) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := p.Poll(ctx)
	if err == nil {
		t.Fatal("poll succeeded, want an error")
	}
	return err
}

func readFile(t testing.TB, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func basicAuth(srv *gitserver.Server) source.Auth {
	return source.Auth{Username: srv.Username(), Password: srv.Password()}
}

func sshAuth(srv *gitserver.Server) source.Auth {
	return source.Auth{SSHPrivateKey: srv.ClientKey(), KnownHosts: srv.KnownHosts()}
}

// TestTransports polls the same repository over every transport and auth.
func TestTransports(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "app")
	sha := repo.Commit(map[string]string{"deploy/app.yaml": "kind: ConfigMap\n"}, "add app")

	tests := []struct {
		name string
		url  string
		auth source.Auth
	}{
		{"http basic", repo.HTTPURL(), basicAuth(srv)},
		{"http bearer", repo.HTTPURL(), source.Auth{BearerToken: srv.BearerToken()}},
		{"http credentials in url", strings.Replace(repo.HTTPURL(), "http://", "http://"+srv.Username()+":"+srv.Password()+"@", 1), source.Auth{}},
		{"ssh", repo.SSHURL(), sshAuth(srv)},
		{"ssh insecure", repo.SSHURL(), source.Auth{SSHPrivateKey: srv.ClientKey(), InsecureSkipHostKeyCheck: true}},
		{"file", repo.FileURL(), source.Auth{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPoller(t, tc.url, source.Ref{}, tc.auth)
			rev := poll(t, p)
			if rev.Commit != sha || rev.Ref != "refs/heads/main" || !rev.Fetched {
				t.Errorf("rev = %+v, want commit %s on refs/heads/main, fetched", rev, sha)
			}
			if got := readFile(t, rev.Dir, "deploy/app.yaml"); got != "kind: ConfigMap\n" {
				t.Errorf("content = %q", got)
			}
			if strings.Contains(rev.URL, srv.Password()) {
				t.Errorf("revision URL carries the password: %s", rev.URL)
			}
			if rev.Author != "refit test <test@refit.dev>" || rev.Message != "add app" || rev.Time.IsZero() {
				t.Errorf("metadata = %q %q %v", rev.Author, rev.Message, rev.Time)
			}
		})
	}
}

// TestFailures checks each failure's kind and that no secret leaks into the
// message.
func TestFailures(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "app")
	repo.Commit(map[string]string{"a.yaml": "a: 1\n"}, "first")
	wrongKey, err := gitserver.NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	otherHost, err := gitserver.NewKnownHosts(srv.SSHAddress())
	if err != nil {
		t.Fatal(err)
	}
	secret := "very-secret-password"
	tests := []struct {
		name string
		url  string
		ref  source.Ref
		auth source.Auth
		want error
	}{
		{"http anonymous", repo.HTTPURL(), source.Ref{}, source.Auth{}, source.ErrAuth},
		{"http wrong password", repo.HTTPURL(), source.Ref{}, source.Auth{Username: "refit", Password: secret}, source.ErrAuth},
		{"http wrong password in url", strings.Replace(repo.HTTPURL(), "http://", "http://refit:"+secret+"@", 1), source.Ref{}, source.Auth{}, source.ErrAuth},
		{"http wrong token", repo.HTTPURL(), source.Ref{}, source.Auth{BearerToken: secret}, source.ErrAuth},
		{"ssh wrong key", repo.SSHURL(), source.Ref{}, source.Auth{SSHPrivateKey: wrongKey, KnownHosts: srv.KnownHosts()}, source.ErrAuth},
		{"ssh host key mismatch", repo.SSHURL(), source.Ref{}, source.Auth{SSHPrivateKey: srv.ClientKey(), KnownHosts: otherHost}, source.ErrHostKey},
		{"ssh host unknown", repo.SSHURL(), source.Ref{}, source.Auth{SSHPrivateKey: srv.ClientKey(), KnownHosts: []byte("[example.com]:22 " + strings.SplitN(string(srv.KnownHosts()), " ", 2)[1])}, source.ErrHostKey},
		{"missing repository", srv.HTTPURL("nope"), source.Ref{}, basicAuth(srv), source.ErrNotFound},
		{"missing file repository", "file://" + t.TempDir() + "/nope.git", source.Ref{}, source.Auth{}, source.ErrNotFound},
		{"missing branch", repo.HTTPURL(), source.Ref{Branch: "nope"}, basicAuth(srv), source.ErrNotFound},
		{"missing tag", repo.SSHURL(), source.Ref{Tag: "v9"}, sshAuth(srv), source.ErrNotFound},
		{"no semver match", repo.FileURL(), source.Ref{SemVer: ">=1"}, source.Auth{}, source.ErrNotFound},
		{"missing commit", repo.FileURL(), source.Ref{Commit: strings.Repeat("ab", 20)}, source.Auth{}, source.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := newPoller(t, tc.url, tc.ref, tc.auth)
			err := pollErr(t, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want kind %v", err, tc.want)
			}
			var se *source.Error
			if !errors.As(err, &se) || se.URL == "" {
				t.Fatalf("err %T is not a *source.Error with a URL", err)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), srv.Password()) {
				t.Errorf("error leaks a credential: %v", err)
			}
			if !strings.Contains(err.Error(), p.URL()) || strings.Contains(p.URL(), secret) {
				t.Errorf("error does not name the repository %s (without credentials): %v", p.URL(), err)
			}
			t.Log(err)
		})
	}
}

func TestConfigErrors(t *testing.T) {
	srv := gitserver.New(t, gitserver.Options{})
	tests := []struct {
		name string
		opts source.Options
	}{
		{"ssh without known_hosts", source.Options{URL: srv.SSHURL("a"), Auth: source.Auth{SSHPrivateKey: srv.ClientKey()}}},
		{"ssh without key", source.Options{URL: srv.SSHURL("a"), Auth: source.Auth{KnownHosts: srv.KnownHosts()}}},
		{"ssh with password", source.Options{URL: srv.SSHURL("a"), Auth: source.Auth{Password: "x", SSHPrivateKey: srv.ClientKey(), KnownHosts: srv.KnownHosts()}}},
		{"http with ssh key", source.Options{URL: srv.HTTPURL("a"), Auth: source.Auth{SSHPrivateKey: srv.ClientKey()}}},
		{"basic and bearer", source.Options{URL: srv.HTTPURL("a"), Auth: source.Auth{Username: "u", Password: "p", BearerToken: "t"}}},
		{"bad key", source.Options{URL: srv.SSHURL("a"), Auth: source.Auth{SSHPrivateKey: []byte("garbage"), KnownHosts: srv.KnownHosts()}}},
		{"bad ref", source.Options{URL: srv.HTTPURL("a"), Ref: source.Ref{Branch: "a", Tag: "b"}}},
		{"unsupported scheme", source.Options{URL: "ftp://example.com/repo.git"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.CacheDir = t.TempDir()
			_, err := source.NewPoller(tc.opts)
			if !errors.Is(err, source.ErrConfig) {
				t.Fatalf("err = %v, want ErrConfig", err)
			}
		})
	}
}

// TestTimeout points a poller at a server that accepts connections and
// never answers: the poll must give up at its timeout.
func TestTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	for _, url := range []string{"http://" + ln.Addr().String() + "/r.git", "ssh://git@" + ln.Addr().String() + "/r.git"} {
		t.Run(strings.SplitN(url, ":", 2)[0], func(t *testing.T) {
			opts := source.Options{URL: url, CacheDir: t.TempDir(), Timeout: 300 * time.Millisecond}
			if strings.HasPrefix(url, "ssh") {
				key, _ := gitserver.NewClientKey()
				opts.Auth = source.Auth{SSHPrivateKey: key, InsecureSkipHostKeyCheck: true}
			}
			p, err := source.NewPoller(opts)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = p.Poll(context.Background())
			if !errors.Is(err, source.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want a timeout", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("poll took %v with a 300ms timeout", d)
			}
		})
	}
}
