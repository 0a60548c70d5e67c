//go:build e2e

package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// gitSSHSigner signs commits as git does with gpg.format=ssh
// (ssh-keygen -Y sign -n git).
type gitSSHSigner struct{ ssh.Signer }

func newGitSSHSigner(t *testing.T) gitSSHSigner {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return gitSSHSigner{s}
}

func (s gitSSHSigner) Sign(m io.Reader) ([]byte, error) {
	sig, err := sshsig.Sign(m, s.Signer, sshsig.HashSHA512, "git")
	if err != nil {
		return nil, err
	}
	return sshsig.Armor(sig), nil
}

// TestCLIVerifyKeys: with --verify-keys, a head commit that no trusted key
// signed is refused before anything is rendered or applied, with the
// reason; a signed one applies.
func TestCLIVerifyKeys(t *testing.T) {
	ns := namespace(t)
	dir, keys := t.TempDir(), filepath.Join(t.TempDir(), "keys")
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	trusted, other := newGitSSHSigner(t), newGitSSHSigner(t)
	keyFile := "# the release team\n" + string(ssh.MarshalAuthorizedKey(trusted.PublicKey()))
	if err := os.WriteFile(keys, []byte(keyFile), 0o600); err != nil {
		t.Fatal(err)
	}
	commit := func(level string, signer git.Signer) string {
		t.Helper()
		writeManifests(t, dir, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {level: "+level+"}\n")
		w, err := repo.Worktree()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Add("app.yaml"); err != nil {
			t.Fatal(err)
		}
		sha, err := w.Commit("level "+level, &git.CommitOptions{Signer: signer,
			Author: &object.Signature{Name: "Dev", Email: "dev@example.com", When: time.Now()}})
		if err != nil {
			t.Fatal(err)
		}
		return sha.String()
	}
	apply := func() (string, int) {
		return runRefitCLI(t, ns, "apply", "--repo", "file://"+dir, "--verify-keys", keys, "--app", ns, "--cache-dir", t.TempDir())
	}
	level := func() string {
		cm, err := bed.Client.CoreV1().ConfigMaps(ns).Get(t.Context(), "settings", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "(none)"
		}
		if err != nil {
			t.Fatal(err)
		}
		return cm.Data["level"]
	}

	unsigned := commit("debug", nil)
	out, code := apply()
	if code != 1 || !strings.Contains(out, "untrusted commit: commit "+unsigned+" is not signed") {
		t.Fatalf("apply of an unsigned commit: exit %d, want 1 and the reason\n%s", code, out)
	}
	if got := level(); got != "(none)" {
		t.Fatalf("an unsigned commit was applied: ConfigMap settings has level %s", got)
	}
	out, code = runCmd(t, exec.Command(refit(t), "render", "--repo", "file://"+dir, "--verify-keys", keys, "--cache-dir", t.TempDir()))
	if code != 1 || strings.Contains(out, "kind: ConfigMap") || !strings.Contains(out, "is not signed") {
		t.Fatalf("render of an unsigned commit: exit %d, want 1, the reason and nothing rendered\n%s", code, out)
	}

	signed := commit("info", trusted)
	if out, code := apply(); code != 0 || !strings.Contains(out, signed) {
		t.Fatalf("apply of a signed commit: exit %d\n%s", code, out)
	}
	if got := level(); got != "info" {
		t.Fatalf("after the signed commit: level %s, want info", got)
	}

	forged := commit("trace", other)
	out, code = apply()
	fp := ssh.FingerprintSHA256(other.PublicKey())
	if code != 1 || !strings.Contains(out, "commit "+forged+" is signed by SSH key "+fp+" (ssh-ed25519), which is not trusted") {
		t.Fatalf("apply of a commit signed by another key: exit %d, want 1 naming key %s\n%s", code, fp, out)
	}
	if got := level(); got != "info" {
		t.Fatalf("a commit signed by another key was applied: level %s, want info", got)
	}
}
