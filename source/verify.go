package source

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/hiddeco/sshsig"
	"golang.org/x/crypto/ssh"
)

// ErrUnverified: the commit is not signed, is signed by a key that is not
// trusted, or its signature does not verify. It is the commit's fault:
// retrying cannot help until a new commit arrives.
var ErrUnverified = errors.New("untrusted commit")

// gitNamespace is the SSHSIG namespace git signs commits and tags in
// (gpg-interface.c: "git").
const gitNamespace = "git"

// Armor lines of the signature formats git writes in a commit's gpgsig header.
const (
	pgpSignatureBegin = "-----BEGIN PGP SIGNATURE-----"
	sshSignatureBegin = "-----BEGIN SSH SIGNATURE-----"
	x509Begin         = "-----BEGIN SIGNED MESSAGE-----"
	pgpPublicBegin    = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
	pgpPublicEnd      = "-----END PGP PUBLIC KEY BLOCK-----"
	pgpPrivateBegin   = "-----BEGIN PGP PRIVATE KEY BLOCK-----"
	armorBegin        = "-----BEGIN "
)

// Keys are the public keys a commit may be signed by: OpenPGP keys and SSH
// keys. The zero value trusts no key; build one with ParseKeys.
type Keys struct {
	pgp openpgp.EntityList
	ssh map[string]ssh.PublicKey // by SHA256 fingerprint
}

// KeySource is one file or Secret value holding keys. Name says where it
// came from, for errors.
type KeySource struct {
	Name string
	Data []byte
}

// ParseKeys reads armored OpenPGP public key blocks and SSH public keys
// (authorized_keys or allowed_signers lines), in any mix; blank lines and
// lines starting with # are ignored. Each source must hold at least one
// key: a source with none is a mistake (a wrong file, an empty Secret key)
// that would otherwise pass unnoticed until every commit is refused.
func ParseKeys(srcs ...KeySource) (*Keys, error) {
	if len(srcs) == 0 {
		return nil, errors.New("no keys given")
	}
	k := &Keys{ssh: map[string]ssh.PublicKey{}}
	for _, src := range srcs {
		n, err := k.parse(src.Data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src.Name, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("%s: no OpenPGP or SSH public key", src.Name)
		}
	}
	return k, nil
}

// parse adds the keys of one source and returns how many it found.
func (k *Keys) parse(data []byte) (int, error) {
	lines := strings.Split(string(data), "\n")
	found := 0
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case line == pgpPublicBegin:
			end := slices.IndexFunc(lines[i:], func(l string) bool { return strings.TrimSpace(l) == pgpPublicEnd })
			if end < 0 {
				return found, fmt.Errorf("line %d: OpenPGP key block has no %s line", i+1, pgpPublicEnd)
			}
			block := make([]string, 0, end+1)
			for _, l := range lines[i : i+end+1] {
				block = append(block, strings.TrimSpace(l))
			}
			ents, err := openpgp.ReadArmoredKeyRing(strings.NewReader(strings.Join(block, "\n") + "\n"))
			if err != nil {
				return found, fmt.Errorf("line %d: OpenPGP key block: %w", i+1, err)
			}
			k.pgp = append(k.pgp, ents...)
			found += len(ents)
			i += end
		case strings.HasPrefix(line, pgpPrivateBegin):
			return found, fmt.Errorf("line %d: an OpenPGP private key: give the public key (gpg --armor --export)", i+1)
		case strings.HasPrefix(line, armorBegin):
			return found, fmt.Errorf("line %d: %s is not a public key (give an OpenPGP public key block or an SSH public key)", i+1, line)
		default:
			pub, opts, err := parseSSHKey(line)
			if err != nil {
				return found, fmt.Errorf("line %d: neither an SSH public key nor an OpenPGP key block: %w", i+1, err)
			}
			if _, cert := pub.(*ssh.Certificate); cert || slices.Contains(opts, "cert-authority") {
				return found, fmt.Errorf("line %d: SSH certificates and certificate authorities are not supported: give the signing key itself", i+1)
			}
			k.ssh[ssh.FingerprintSHA256(pub)] = pub
			found++
		}
	}
	return found, nil
}

// parseSSHKey reads an authorized_keys line ("[options] type key
// [comment]") or an allowed_signers line, git's gpg.ssh.allowedSignersFile
// ("principals [options] type key"). Options are not honoured.
func parseSSHKey(line string) (ssh.PublicKey, []string, error) {
	pub, _, opts, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err == nil {
		return pub, opts, nil
	}
	if i := strings.IndexAny(line, " \t"); i > 0 {
		if pub, _, opts, _, err2 := ssh.ParseAuthorizedKey([]byte(strings.TrimSpace(line[i:]))); err2 == nil {
			return pub, opts, nil
		}
	}
	return nil, nil, err
}

// Digest identifies the set of keys (not their order), so trees checked out
// under one set are not taken as verified under another. An OpenPGP key
// counts with its signatures: a key block that now carries a revocation or
// a new expiry is another key.
func (k *Keys) Digest() string {
	var ids []string
	for _, e := range k.pgp {
		var b bytes.Buffer
		if err := e.Serialize(&b); err != nil {
			b.Reset()
			b.Write(e.PrimaryKey.Fingerprint)
		}
		ids = append(ids, fmt.Sprintf("pgp:%x", sha256.Sum256(b.Bytes())))
	}
	for fp := range k.ssh {
		ids = append(ids, "ssh:"+fp)
	}
	slices.Sort(ids)
	sum := sha256.Sum256([]byte(strings.Join(ids, "\n")))
	return fmt.Sprintf("%x", sum[:8])
}

// Verify checks that c carries exactly one signature, made by one of the
// keys over the commit as git signs it (the object without its gpgsig
// header), and returns who signed it. Every refusal wraps ErrUnverified and
// names the signing key when there is one: an OpenPGP key ID in hex, an SSH
// key's SHA256 fingerprint.
func (k *Keys) Verify(c *object.Commit) (string, error) {
	sig := strings.TrimLeft(c.PGPSignature, " \n")
	if sig == "" {
		return "", fmt.Errorf("commit %s is not signed: %w", c.Hash, ErrUnverified)
	}
	if n := strings.Count("\n"+sig, "\n"+armorBegin); n > 1 {
		// git itself refuses to vouch for a commit with several signatures.
		return "", fmt.Errorf("commit %s carries %d signatures, not one: %w", c.Hash, n, ErrUnverified)
	}
	var payload bytes.Buffer
	if err := encodeUnsigned(c, &payload); err != nil {
		return "", fmt.Errorf("commit %s: encode: %v: %w", c.Hash, err, ErrUnverified)
	}
	switch {
	case strings.HasPrefix(sig, pgpSignatureBegin):
		return k.verifyPGP(c.Hash, payload.Bytes(), sig)
	case strings.HasPrefix(sig, sshSignatureBegin):
		return k.verifySSH(c.Hash, payload.Bytes(), sig)
	case strings.HasPrefix(sig, x509Begin):
		return "", fmt.Errorf("commit %s has an X.509 signature: only OpenPGP and SSH signatures are supported: %w", c.Hash, ErrUnverified)
	}
	return "", fmt.Errorf("commit %s has a signature of an unknown format: %w", c.Hash, ErrUnverified)
}

// encodeUnsigned writes the bytes git signed: go-git streams them from the
// raw object, so they are exactly what was hashed, whatever the encoding.
func encodeUnsigned(c *object.Commit, w io.Writer) error {
	obj := &plumbing.MemoryObject{}
	if err := c.EncodeWithoutSignature(obj); err != nil {
		return err
	}
	r, err := obj.Reader()
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(w, r)
	return err
}

func (k *Keys) verifyPGP(commit plumbing.Hash, payload []byte, sig string) (string, error) {
	issuer := pgpIssuer(sig)
	signer, err := openpgp.CheckArmoredDetachedSignature(k.pgp, bytes.NewReader(payload), strings.NewReader(sig), nil)
	switch {
	case errors.Is(err, pgperrors.ErrUnknownIssuer):
		return "", fmt.Errorf("commit %s is signed by OpenPGP key %s, which is not trusted: %w", commit, issuer, ErrUnverified)
	case err != nil:
		return "", fmt.Errorf("commit %s: OpenPGP signature by key %s does not verify: %v: %w", commit, issuer, err, ErrUnverified)
	}
	who := "OpenPGP key " + issuer
	for name := range signer.Identities {
		who += " (" + name + ")"
		break
	}
	return who, nil
}

// pgpIssuer is the 64-bit ID, in hex, of the key that made an armored
// signature, for messages. A signature names its key by ID, by fingerprint
// or both; a v4 key's ID is the end of its fingerprint, a v6 key's the start.
func pgpIssuer(sig string) string {
	block, err := armor.Decode(strings.NewReader(sig))
	if err != nil {
		return "(unreadable signature)"
	}
	p, err := packet.NewReader(block.Body).Next()
	if err != nil {
		return "(unreadable signature)"
	}
	s, ok := p.(*packet.Signature)
	switch {
	case !ok:
		return "(not a signature packet)"
	case s.IssuerKeyId != nil:
		return fmt.Sprintf("%016X", *s.IssuerKeyId)
	case len(s.IssuerFingerprint) == 20:
		return fmt.Sprintf("%X", s.IssuerFingerprint[12:])
	case len(s.IssuerFingerprint) >= 8:
		return fmt.Sprintf("%X", s.IssuerFingerprint[:8])
	}
	return "(no issuer)"
}

func (k *Keys) verifySSH(commit plumbing.Hash, payload []byte, sig string) (string, error) {
	s, err := sshsig.Unarmor([]byte(sig))
	if err != nil {
		return "", fmt.Errorf("commit %s: SSH signature: %v: %w", commit, err, ErrUnverified)
	}
	fp := ssh.FingerprintSHA256(s.PublicKey)
	pub, ok := k.ssh[fp]
	if !ok {
		return "", fmt.Errorf("commit %s is signed by SSH key %s (%s), which is not trusted: %w", commit, fp, s.PublicKey.Type(), ErrUnverified)
	}
	// A signature made for another purpose (ssh-keygen's default "file")
	// must not pass for a commit signature.
	if s.Namespace != gitNamespace {
		return "", fmt.Errorf("commit %s: SSH signature by key %s is for namespace %q, not %q: %w", commit, fp, s.Namespace, gitNamespace, ErrUnverified)
	}
	if err := sshsig.Verify(bytes.NewReader(payload), s, pub, s.HashAlgorithm, gitNamespace); err != nil {
		return "", fmt.Errorf("commit %s: SSH signature by key %s does not verify: %v: %w", commit, fp, err, ErrUnverified)
	}
	return "SSH key " + fp, nil
}
