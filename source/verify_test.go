package source_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"

	"github.com/refit-gitops/refit/source"
)

// pgpKey is a real OpenPGP key, made for the test (Ed25519: fast).
type pgpKey struct{ ent *openpgp.Entity }

func newPGPKey(t testing.TB, name string) pgpKey {
	t.Helper()
	ent, err := openpgp.NewEntity(name, "", strings.ToLower(name)+"@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return pgpKey{ent}
}

// public is the key as `gpg --armor --export` writes it.
func (k pgpKey) public(t testing.TB) string {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PublicKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.ent.Serialize(w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return b.String() + "\n"
}

// private is the secret key block, which a keys file must refuse.
func (k pgpKey) private(t testing.TB) string {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, openpgp.PrivateKeyType, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := k.ent.SerializePrivate(w, nil); err != nil {
		t.Fatal(err)
	}
	w.Close()
	return b.String() + "\n"
}

// id is the hex ID of the key that signs, as errors name it.
func (k pgpKey) id() string {
	sk, _ := k.ent.SigningKey(time.Now())
	return fmt.Sprintf("%016X", sk.PublicKey.KeyId)
}

// Sign makes the detached armored signature git makes with gpg.
func (k pgpKey) Sign(m io.Reader) ([]byte, error) {
	var b bytes.Buffer
	err := openpgp.ArmoredDetachSign(&b, k.ent, m, nil)
	return b.Bytes(), err
}

// sshKey is a real Ed25519 SSH key. Sign makes the signature git makes
// with gpg.format=ssh (ssh-keygen -Y sign -n git), in namespace ns.
type sshKey struct {
	signer ssh.Signer
	ns     string
}

func newSSHKey(t testing.TB) sshKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return sshKey{signer: s, ns: "git"}
}

func (k sshKey) Sign(m io.Reader) ([]byte, error) {
	sig, err := sshsig.Sign(m, k.signer, sshsig.HashSHA512, k.ns)
	if err != nil {
		return nil, err
	}
	return sshsig.Armor(sig), nil
}

// authorized is the key as an authorized_keys line.
func (k sshKey) authorized() string { return string(ssh.MarshalAuthorizedKey(k.signer.PublicKey())) }

func (k sshKey) fingerprint() string { return ssh.FingerprintSHA256(k.signer.PublicKey()) }

// twoSigners signs with both keys, one signature block after the other.
type twoSigners struct{ a, b git.Signer }

func (s twoSigners) Sign(m io.Reader) ([]byte, error) {
	data, err := io.ReadAll(m)
	if err != nil {
		return nil, err
	}
	x, err := s.a.Sign(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	y, err := s.b.Sign(bytes.NewReader(data))
	return append(append(x, '\n'), y...), err
}

// commitWith commits content as app.yaml in repo's worktree, signed by
// signer (nil: unsigned).
func commitWith(t testing.TB, repo *git.Repository, content string, signer git.Signer) plumbing.Hash {
	t.Helper()
	w, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	f, err := w.Filesystem.Create("app.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := w.Add("app.yaml"); err != nil {
		t.Fatal(err)
	}
	when := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	sha, err := w.Commit("change "+content, &git.CommitOptions{
		Author: &object.Signature{Name: "Dev", Email: "dev@example.com", When: when}, Signer: signer})
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

// tamper stores a copy of the commit with one field changed and its
// signature kept, as an attacker who cannot sign would forge it.
func tamper(t testing.TB, repo *git.Repository, sha plumbing.Hash, change func(*object.Commit)) plumbing.Hash {
	t.Helper()
	c, err := repo.CommitObject(sha)
	if err != nil {
		t.Fatal(err)
	}
	forged := *c
	change(&forged)
	obj := repo.Storer.NewEncodedObject()
	if err := forged.Encode(obj); err != nil {
		t.Fatal(err)
	}
	h, err := repo.Storer.SetEncodedObject(obj)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func parseKeys(t testing.TB, text string) *source.Keys {
	t.Helper()
	keys, err := source.ParseKeys(source.KeySource{Name: "keys", Data: []byte(text)})
	if err != nil {
		t.Fatalf("parse keys: %v\n%s", err, text)
	}
	return keys
}

func TestVerify(t *testing.T) {
	alice, mallory := newPGPKey(t, "Alice"), newPGPKey(t, "Mallory")
	bob, eve := newSSHKey(t), newSSHKey(t)
	fileNS := bob
	fileNS.ns = "file"
	// One file with both kinds, comments and blank lines; Bob's key as an
	// allowed_signers line, the format of git's gpg.ssh.allowedSignersFile.
	keys := parseKeys(t, "# release team\n\n"+alice.public(t)+"\n# bob\nbob@example.com "+bob.authorized())

	repo, err := git.Init(memory.NewStorage(), memfs.New())
	if err != nil {
		t.Fatal(err)
	}
	signed := func(s git.Signer) func() plumbing.Hash {
		return func() plumbing.Hash { return commitWith(t, repo, rand.Text(), s) }
	}
	tests := []struct {
		name       string
		commit     func() plumbing.Hash
		wantSigner string // on success
		wantErr    string // else, in the error
	}{
		{name: "OpenPGP, trusted key", commit: signed(alice), wantSigner: "OpenPGP key " + alice.id() + " (Alice <alice@example.com>)"},
		{name: "SSH, trusted key", commit: signed(bob), wantSigner: "SSH key " + bob.fingerprint()},
		{name: "unsigned", commit: signed(nil), wantErr: "is not signed"},
		{name: "OpenPGP, another key", commit: signed(mallory),
			wantErr: "is signed by OpenPGP key " + mallory.id() + ", which is not trusted"},
		{name: "SSH, another key", commit: signed(eve),
			wantErr: "is signed by SSH key " + eve.fingerprint() + " (ssh-ed25519), which is not trusted"},
		{name: "SSH, trusted key, namespace file", commit: signed(fileNS),
			wantErr: `SSH signature by key ` + bob.fingerprint() + ` is for namespace "file", not "git"`},
		{name: "OpenPGP, message changed after signing", commit: func() plumbing.Hash {
			return tamper(t, repo, signed(alice)(), func(c *object.Commit) { c.Message = "harmless\n" })
		}, wantErr: "OpenPGP signature by key " + alice.id() + " does not verify"},
		{name: "SSH, tree changed after signing", commit: func() plumbing.Hash {
			evil := commitWith(t, repo, "evil", nil)
			ec, _ := repo.CommitObject(evil)
			return tamper(t, repo, signed(bob)(), func(c *object.Commit) { c.TreeHash = ec.TreeHash })
		}, wantErr: "SSH signature by key " + bob.fingerprint() + " does not verify"},
		{name: "SSH, signature moved to another commit", commit: func() plumbing.Hash {
			good, _ := repo.CommitObject(signed(bob)())
			return tamper(t, repo, signed(nil)(), func(c *object.Commit) { c.PGPSignature = good.PGPSignature })
		}, wantErr: "does not verify"},
		{name: "two signatures", commit: signed(twoSigners{alice, bob}), wantErr: "carries 2 signatures, not one"},
		{name: "X.509 signature", commit: func() plumbing.Hash {
			return tamper(t, repo, signed(nil)(), func(c *object.Commit) {
				c.PGPSignature = "-----BEGIN SIGNED MESSAGE-----\nMIIB\n-----END SIGNED MESSAGE-----\n"
			})
		}, wantErr: "has an X.509 signature"},
		{name: "garbage signature", commit: func() plumbing.Hash {
			return tamper(t, repo, signed(nil)(), func(c *object.Commit) { c.PGPSignature = "hello\n" })
		}, wantErr: "unknown format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sha := tc.commit()
			c, err := repo.CommitObject(sha)
			if err != nil {
				t.Fatal(err)
			}
			signer, err := keys.Verify(c)
			if tc.wantErr == "" {
				if err != nil || signer != tc.wantSigner {
					t.Fatalf("Verify = %q, %v; want %q, nil", signer, err, tc.wantSigner)
				}
				return
			}
			t.Log(err)
			if !errors.Is(err, source.ErrUnverified) || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), sha.String()) {
				t.Fatalf("Verify error = %v; want ErrUnverified naming commit %s and %q", err, sha, tc.wantErr)
			}
		})
	}
}

func TestParseKeys(t *testing.T) {
	alice := newPGPKey(t, "Alice")
	bob := newSSHKey(t)
	tests := []struct {
		name    string
		srcs    []source.KeySource
		wantErr string
	}{
		{name: "OpenPGP block and SSH key, indented, CRLF", srcs: []source.KeySource{{Name: "k",
			Data: []byte(strings.ReplaceAll("  "+strings.ReplaceAll(alice.public(t), "\n", "\n  ")+bob.authorized(), "\n", "\r\n"))}}},
		{name: "authorized_keys options", srcs: []source.KeySource{{Name: "k", Data: []byte(`no-pty,from="10.0.0.1" ` + bob.authorized())}}},
		{name: "allowed_signers options", srcs: []source.KeySource{{Name: "k", Data: []byte(`bob@example.com namespaces="git" ` + bob.authorized())}}},
		{name: "no source", wantErr: "no keys given"},
		{name: "empty", srcs: []source.KeySource{{Name: "keys.txt"}}, wantErr: "keys.txt: no OpenPGP or SSH public key"},
		{name: "comments only", srcs: []source.KeySource{{Name: "keys.txt", Data: []byte("# nobody yet\n\n")}},
			wantErr: "keys.txt: no OpenPGP or SSH public key"},
		{name: "one source of two empty", srcs: []source.KeySource{{Name: "a", Data: []byte(bob.authorized())}, {Name: "secret x/y key b"}},
			wantErr: "secret x/y key b: no OpenPGP or SSH public key"},
		{name: "a line that is no key", srcs: []source.KeySource{{Name: "keys.txt", Data: []byte(bob.authorized() + "# ok\nnot a key\n")}},
			wantErr: "keys.txt: line 3: neither an SSH public key nor an OpenPGP key block"},
		{name: "OpenPGP private key", srcs: []source.KeySource{{Name: "k", Data: []byte(alice.private(t))}},
			wantErr: "k: line 1: an OpenPGP private key: give the public key"},
		{name: "SSH private key", srcs: []source.KeySource{{Name: "k", Data: []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----\n")}},
			wantErr: "k: line 1: -----BEGIN OPENSSH PRIVATE KEY----- is not a public key"},
		{name: "OpenPGP block without its end", srcs: []source.KeySource{{Name: "k", Data: []byte(strings.Split(alice.public(t), "-----END")[0])}},
			wantErr: "k: line 1: OpenPGP key block has no -----END PGP PUBLIC KEY BLOCK----- line"},
		{name: "OpenPGP block corrupt", srcs: []source.KeySource{{Name: "k", Data: []byte("\n-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n-----END PGP PUBLIC KEY BLOCK-----\n")}},
			wantErr: "k: line 2: OpenPGP key block"},
		{name: "certificate authority", srcs: []source.KeySource{{Name: "k", Data: []byte("cert-authority " + bob.authorized())}},
			wantErr: "k: line 1: SSH certificates and certificate authorities are not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := source.ParseKeys(tc.srcs...)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("ParseKeys: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("ParseKeys error = %v; want %q", err, tc.wantErr)
			}
		})
	}
}

func TestKeysDigest(t *testing.T) {
	alice, bob, eve := newPGPKey(t, "Alice").public(t), newSSHKey(t).authorized(), newSSHKey(t).authorized()
	one, reordered, more := parseKeys(t, alice+bob), parseKeys(t, bob+"# same keys\n"+alice), parseKeys(t, alice+bob+eve)
	if one.Digest() != reordered.Digest() {
		t.Errorf("the same keys in another order: digest %s, then %s", one.Digest(), reordered.Digest())
	}
	if one.Digest() == more.Digest() {
		t.Errorf("one more key: digest unchanged (%s)", one.Digest())
	}
}

// A key block that now carries a revocation refuses the key's commits, and
// is another set of keys for the cache.
func TestRevokedKey(t *testing.T) {
	alice := newPGPKey(t, "Alice")
	before := parseKeys(t, alice.public(t))
	repo, err := git.Init(memory.NewStorage(), memfs.New())
	if err != nil {
		t.Fatal(err)
	}
	c, err := repo.CommitObject(commitWith(t, repo, "v1", alice))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := before.Verify(c); err != nil {
		t.Fatalf("before the revocation: %v", err)
	}
	if err := alice.ent.RevokeKey(packet.KeyCompromised, "stolen", nil); err != nil {
		t.Fatal(err)
	}
	after := parseKeys(t, alice.public(t))
	if _, err := after.Verify(c); !errors.Is(err, source.ErrUnverified) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("after the revocation: %v; want the commit refused, the key revoked", err)
	}
	if before.Digest() == after.Digest() {
		t.Fatalf("a revocation left the digest unchanged (%s)", before.Digest())
	}
}

// BenchmarkVerify: the cost of verifying one new commit, per kind of key
// (go test -run '^$' -bench Verify -benchmem ./source).
func BenchmarkVerify(b *testing.B) {
	ent, err := openpgp.NewEntity("Rsa", "", "rsa@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 3072})
	if err != nil {
		b.Fatal(err)
	}
	rsa, ed, sk := pgpKey{ent}, newPGPKey(b, "Ed"), newSSHKey(b)
	for _, tc := range []struct {
		name   string
		public string
		signer git.Signer
	}{
		{"ssh-ed25519", sk.authorized(), sk},
		{"openpgp-ed25519", ed.public(b), ed},
		{"openpgp-rsa3072", rsa.public(b), rsa},
	} {
		b.Run(tc.name, func(b *testing.B) {
			repo, err := git.Init(memory.NewStorage(), memfs.New())
			if err != nil {
				b.Fatal(err)
			}
			c, err := repo.CommitObject(commitWith(b, repo, "v1", tc.signer))
			if err != nil {
				b.Fatal(err)
			}
			keys := parseKeys(b, tc.public)
			for b.Loop() {
				if _, err := keys.Verify(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
