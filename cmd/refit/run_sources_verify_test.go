package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/refit-gitops/refit/config"
)

func sshPublicKey(t *testing.T) []byte {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return ssh.MarshalAuthorizedKey(k)
}

// TestVerifyKeysWiring: source.verify reads every key of the Secret (or the
// one named) and the keys file; a place with no usable key stops startup
// with an error that says where.
func TestVerifyKeysWiring(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(file, sshPublicKey(t), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte("# nobody yet\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := func(name string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "refit-system"}, Data: data}
	}
	client := fake.NewClientset(
		secret("signers", map[string][]byte{"alice": sshPublicKey(t), "bob": sshPublicKey(t)}),
		secret("half", map[string][]byte{"alice": sshPublicKey(t), "notes": []byte("# to do\n")}),
		secret("empty", nil),
	)
	tests := []struct {
		name    string
		verify  *config.Verify
		flags   *sourceFlags
		wantErr string
	}{
		{name: "every key of a Secret", verify: &config.Verify{SecretRef: &config.SecretRef{Name: "signers"}}},
		{name: "the named key of a Secret", verify: &config.Verify{SecretRef: &config.SecretRef{Name: "half", Key: "alice"}}},
		{name: "file and Secret", verify: &config.Verify{KeysFile: file, SecretRef: &config.SecretRef{Name: "signers"}}},
		{name: "a Secret key with no key in it", verify: &config.Verify{SecretRef: &config.SecretRef{Name: "half"}},
			wantErr: "source.verify: secret refit-system/half key notes: no OpenPGP or SSH public key"},
		{name: "an empty Secret", verify: &config.Verify{SecretRef: &config.SecretRef{Name: "empty"}},
			wantErr: "source.verify: secret refit-system/empty holds no keys"},
		{name: "a missing Secret", verify: &config.Verify{SecretRef: &config.SecretRef{Name: "nope"}},
			wantErr: `source.verify: secret refit-system/nope: secrets "nope" not found`},
		{name: "a missing key", verify: &config.Verify{SecretRef: &config.SecretRef{Name: "signers", Key: "carol"}},
			wantErr: `source.verify: secret refit-system/signers has no key "carol"`},
		{name: "a missing file", verify: &config.Verify{KeysFile: file + ".nope"}, wantErr: "source.verify: open " + file + ".nope"},
		{name: "nothing named", verify: &config.Verify{}, wantErr: "source.verify: set secretRef or keysFile"},
		{name: "--verify-keys of the --repo app", flags: &sourceFlags{repo: "https://example.com/a.git", verifyKeys: file}},
		{name: "--verify-keys with no usable key", flags: &sourceFlags{repo: "https://example.com/a.git", verifyKeys: empty},
			wantErr: "--verify-keys: " + empty + ": no OpenPGP or SSH public key"},
		{name: "--verify-keys with another app", verify: &config.Verify{KeysFile: file},
			flags: &sourceFlags{repo: "https://example.com/other.git", verifyKeys: file}, wantErr: "--verify-keys applies to the --repo app only"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := &appWiring{client: client, secretsNS: "refit-system", cacheDir: t.TempDir(), flags: tc.flags}
			app := config.App{Name: "a", Source: config.Source{URL: "https://example.com/a.git", Verify: tc.verify}}
			opts, err := w.sourceOptions(t.Context(), app)
			switch {
			case tc.wantErr == "" && (err != nil || opts.Verify == nil):
				t.Fatalf("sourceOptions: verify %v, %v; want keys", opts.Verify, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("sourceOptions error = %v; want %q", err, tc.wantErr)
			}
		})
	}
}
