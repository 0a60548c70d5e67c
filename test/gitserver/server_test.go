package gitserver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"

	"github.com/refit-gitops/refit/test/gitserver"
)

func listRefs(t *testing.T, url string, auth transport.AuthMethod) (map[string]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{url}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth})
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, r := range refs {
		if r.Type() == plumbing.HashReference {
			out[r.Name().String()] = r.Hash().String()
		}
	}
	return out, nil
}

func sshAuth(t *testing.T, key, knownHosts []byte) transport.AuthMethod {
	t.Helper()
	auth, err := gitssh.NewPublicKeys("git", key, "")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(strings.SplitN(string(knownHosts), " ", 2)[1]))
	if err != nil {
		t.Fatal(err)
	}
	auth.HostKeyCallback = ssh.FixedHostKey(pub)
	return auth
}

func TestServer(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "app")
	first := repo.Commit(map[string]string{"a.yaml": "a: 1\n"}, "first")
	second := repo.Commit(map[string]string{"dir/b.yaml": "b: 2\n"}, "second")
	repo.Tag("v1.0.0", first, "release 1.0.0")
	repo.Tag("light", second, "")
	repo.Checkout("feature")
	feature := repo.Commit(map[string]string{"c.yaml": "c: 3\n"}, "feature")

	wrongKey, err := gitserver.NewClientKey()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		url     string
		auth    transport.AuthMethod
		wantErr error
	}{
		{"http basic", repo.HTTPURL(), &githttp.BasicAuth{Username: srv.Username(), Password: srv.Password()}, nil},
		{"http token", repo.HTTPURL(), &githttp.TokenAuth{Token: srv.BearerToken()}, nil},
		{"http anonymous", repo.HTTPURL(), nil, transport.ErrAuthenticationRequired},
		{"http wrong password", repo.HTTPURL(), &githttp.BasicAuth{Username: srv.Username(), Password: "nope"}, transport.ErrAuthenticationRequired},
		{"ssh key", repo.SSHURL(), sshAuth(t, srv.ClientKey(), srv.KnownHosts()), nil},
		{"file", repo.FileURL(), nil, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			refs, err := listRefs(t, tc.url, tc.auth)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"refs/heads/main": second, "refs/heads/feature": feature, "refs/tags/light": second}
			for ref, sha := range want {
				if refs[ref] != sha {
					t.Errorf("%s = %q, want %q (all: %v)", ref, refs[ref], sha, refs)
				}
			}
			if _, ok := refs["refs/tags/v1.0.0"]; !ok {
				t.Errorf("annotated tag missing: %v", refs)
			}
		})
	}
	t.Run("ssh wrong key", func(t *testing.T) {
		_, err := listRefs(t, repo.SSHURL(), sshAuth(t, wrongKey, srv.KnownHosts()))
		if err == nil || !strings.Contains(err.Error(), "unable to authenticate") {
			t.Fatalf("err = %v, want an authentication failure", err)
		}
	})
	t.Run("known_hosts line verifies the host key", func(t *testing.T) {
		auth, err := gitssh.NewPublicKeys("git", srv.ClientKey(), "")
		if err != nil {
			t.Fatal(err)
		}
		path := t.TempDir() + "/known_hosts"
		writeFile(t, path, srv.KnownHosts())
		db, err := knownhosts.NewDB(path)
		if err != nil {
			t.Fatal(err)
		}
		auth.HostKeyCallback = db.HostKeyCallback()
		if _, err := listRefs(t, repo.SSHURL(), auth); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reset and delete", func(t *testing.T) {
		repo.ResetBranch("main", first)
		repo.DeleteRef("refs/heads/feature")
		refs, err := listRefs(t, repo.FileURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if refs["refs/heads/main"] != first {
			t.Errorf("main = %s, want %s", refs["refs/heads/main"], first)
		}
		if _, ok := refs["refs/heads/feature"]; ok {
			t.Errorf("feature still there: %v", refs)
		}
	})
}

// A rotated password is the only one accepted: the old one is refused.
func TestServerNewPassword(t *testing.T) {
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "app")
	repo.Commit(map[string]string{"a.yaml": "a: 1\n"}, "first")
	old := srv.Password()
	rotated := srv.NewPassword()
	if rotated == old || srv.Password() != rotated {
		t.Fatalf("NewPassword = %q, Password = %q; old %q", rotated, srv.Password(), old)
	}
	if _, err := listRefs(t, repo.HTTPURL(), &githttp.BasicAuth{Username: srv.Username(), Password: old}); !errors.Is(err, transport.ErrAuthenticationRequired) {
		t.Errorf("old password: err = %v, want %v", err, transport.ErrAuthenticationRequired)
	}
	if _, err := listRefs(t, repo.HTTPURL(), &githttp.BasicAuth{Username: srv.Username(), Password: rotated}); err != nil {
		t.Errorf("new password: %v", err)
	}
}
