package source_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"

	"github.com/refit-gitops/refit/source"
)

// gitTool runs a command of the machine's tools (git, ssh-keygen, gpg) in
// dir with a private HOME, so no user or system configuration leaks in.
func gitTool(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append([]string{"HOME=" + dir, "GIT_CONFIG_NOSYSTEM=1"}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed: %v", n, err)
		}
	}
}

// gitSignedHead makes a repository with one commit signed by git itself
// with the given configuration, and returns its head commit.
func gitSignedHead(t *testing.T, dir string, env []string, config ...string) *git.Repository {
	t.Helper()
	gitTool(t, dir, env, "git", "init", "-q", "repo")
	repo := filepath.Join(dir, "repo")
	if err := os.WriteFile(filepath.Join(repo, "app.yaml"), []byte("kind: ConfigMap\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitTool(t, repo, env, "git", "add", "app.yaml")
	args := []string{"-c", "user.name=Dev", "-c", "user.email=dev@example.com"}
	for _, c := range config {
		args = append(args, "-c", c)
	}
	gitTool(t, repo, env, "git", append(args, "commit", "-q", "-S", "-m", "signed by git")...)
	r, err := git.PlainOpen(repo)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestVerifyCommitsSignedByGit checks the signatures git itself writes,
// with ssh-keygen (gpg.format=ssh) and with gpg, and that refusals name
// the key as those tools print it.
func TestVerifyCommitsSignedByGit(t *testing.T) {
	t.Run("ssh", func(t *testing.T) {
		needTools(t, "git", "ssh-keygen")
		dir := t.TempDir()
		for _, k := range []string{"signer", "other"} {
			gitTool(t, dir, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", k, "-f", filepath.Join(dir, k))
		}
		repo := gitSignedHead(t, dir, nil, "gpg.format=ssh", "user.signingkey="+filepath.Join(dir, "signer"))
		head := headCommit(t, repo)
		signerPub, otherPub := readFile(t, dir, "signer.pub"), readFile(t, dir, "other.pub")
		fp := strings.Fields(gitTool(t, dir, nil, "ssh-keygen", "-l", "-f", filepath.Join(dir, "signer.pub")))[1]

		if who, err := parseKeys(t, signerPub).Verify(head); err != nil || who != "SSH key "+fp {
			t.Fatalf("Verify with the signing key = %q, %v; want SSH key %s", who, err, fp)
		}
		_, err := parseKeys(t, otherPub).Verify(head)
		if !errors.Is(err, source.ErrUnverified) || !strings.Contains(err.Error(), "is signed by SSH key "+fp+" (ssh-ed25519), which is not trusted") {
			t.Fatalf("Verify with another key: %v; want it refused naming %s", err, fp)
		}
	})
	t.Run("openpgp", func(t *testing.T) {
		needTools(t, "git", "gpg", "gpgconf")
		dir := t.TempDir()
		home := filepath.Join(dir, "gnupg")
		if err := os.Mkdir(home, 0o700); err != nil {
			t.Fatal(err)
		}
		env := []string{"GNUPGHOME=" + home}
		// gpg starts an agent for the secret key: stop it with the test.
		t.Cleanup(func() { _ = exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run() })
		gpg := func(args ...string) string {
			return gitTool(t, dir, env, "gpg", append([]string{"--batch", "--pinentry-mode", "loopback", "--passphrase", ""}, args...)...)
		}
		gpg("--quick-gen-key", "Dev <dev@example.com>", "ed25519", "sign", "never")
		gpg("--quick-gen-key", "Other <other@example.com>", "ed25519", "sign", "never")
		keyID := func(uid string) string {
			for _, l := range strings.Split(gpg("--with-colons", "--list-keys", uid), "\n") {
				if f := strings.Split(l, ":"); f[0] == "pub" {
					return f[4]
				}
			}
			t.Fatalf("no key of %s", uid)
			return ""
		}
		devID := keyID("dev@example.com")
		repo := gitSignedHead(t, dir, env, "gpg.program=gpg", "user.signingkey="+devID)
		head := headCommit(t, repo)

		if who, err := parseKeys(t, gpg("--armor", "--export", "dev@example.com")).Verify(head); err != nil || who != "OpenPGP key "+devID+" (Dev <dev@example.com>)" {
			t.Fatalf("Verify with the signing key = %q, %v; want OpenPGP key %s", who, err, devID)
		}
		_, err := parseKeys(t, gpg("--armor", "--export", "other@example.com")).Verify(head)
		if !errors.Is(err, source.ErrUnverified) || !strings.Contains(err.Error(), "is signed by OpenPGP key "+devID+", which is not trusted") {
			t.Fatalf("Verify with another key: %v; want it refused naming %s", err, devID)
		}
	})
}

func headCommit(t *testing.T, repo *git.Repository) *object.Commit {
	t.Helper()
	ref, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(ref.Hash())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
