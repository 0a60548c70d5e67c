package source

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
)

// Auth holds the credentials for one repository. Which fields apply depends
// on the URL's scheme; setting ones that do not apply is an error, so a
// credential is never silently ignored.
type Auth struct {
	// HTTPS basic auth (a personal access token usually goes in Password).
	Username string
	Password string
	// HTTPS bearer token (Authorization: Bearer).
	BearerToken string

	// SSH private key (PEM or OpenSSH format) and its passphrase, if any.
	SSHPrivateKey []byte
	SSHPassphrase string
	// KnownHosts lists the accepted host keys (known_hosts format). It is
	// required for SSH.
	KnownHosts []byte
	// InsecureSkipHostKeyCheck accepts any SSH host key. For tests only:
	// it makes the connection open to a man in the middle.
	InsecureSkipHostKeyCheck bool
}

// secrets lists the values to scrub from error text.
func (a Auth) secrets() []string {
	return []string{a.Password, a.BearerToken, a.SSHPassphrase}
}

// digest identifies the credentials ("" for none), so that pollers with
// other credentials are told apart without keeping the secrets in a key.
func (a Auth) digest() string {
	if a.Username == "" && a.Password == "" && a.BearerToken == "" && len(a.SSHPrivateKey) == 0 &&
		a.SSHPassphrase == "" && len(a.KnownHosts) == 0 && !a.InsecureSkipHostKeyCheck {
		return ""
	}
	h := sha256.New()
	for _, v := range []string{a.Username, a.Password, a.BearerToken, string(a.SSHPrivateKey), a.SSHPassphrase,
		string(a.KnownHosts), strconv.FormatBool(a.InsecureSkipHostKeyCheck)} {
		fmt.Fprintf(h, "%d:%s", len(v), v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// CredentialsDigest identifies what a poller of opts authenticates and
// verifies commits with, without keeping the secrets: equal digests, equal
// credentials and keys.
func (o Options) CredentialsDigest() string {
	d := "auth " + o.Auth.digest()
	if o.Verify != nil {
		d += "\nverify " + o.Verify.Digest()
	}
	sum := sha256.Sum256([]byte(d))
	return hex.EncodeToString(sum[:])
}

// endpoint is a parsed repository URL with its credentials split off.
type endpoint struct {
	url  string // what go-git dials: credentials removed
	safe string // for errors, logs and Revision.URL
	ep   *transport.Endpoint
}

func parseEndpoint(raw string, auth *Auth) (endpoint, error) {
	ep, err := transport.NewEndpoint(raw)
	if err != nil {
		return endpoint{}, fmt.Errorf("url %q: %w", scrub(raw), ErrConfig)
	}
	switch ep.Protocol {
	case "http", "https":
		// Credentials in the URL are taken as basic auth unless set apart.
		if ep.User != "" && auth.Username == "" && auth.BearerToken == "" {
			auth.Username, auth.Password = ep.User, ep.Password
		}
		ep.User, ep.Password = "", ""
	case "ssh":
		if ep.Password != "" {
			return endpoint{}, fmt.Errorf("url %s: passwords are not supported over ssh: %w", scrub(raw), ErrConfig)
		}
		if ep.User == "" {
			ep.User = "git"
		}
	case "file":
	default:
		return endpoint{}, fmt.Errorf("url %s: unsupported scheme %q: %w", scrub(raw), ep.Protocol, ErrConfig)
	}
	u := ep.String()
	return endpoint{url: u, safe: u, ep: ep}, nil
}

// method builds the go-git auth method for e, or nil for anonymous access.
func (a Auth) method(e endpoint, dir string, timeout time.Duration) (transport.AuthMethod, error) {
	hasHTTP := a.Username != "" || a.Password != "" || a.BearerToken != ""
	hasSSH := len(a.SSHPrivateKey) > 0 || len(a.KnownHosts) > 0 || a.InsecureSkipHostKeyCheck
	switch e.ep.Protocol {
	case "http", "https":
		if hasSSH {
			return nil, fmt.Errorf("ssh settings given for an %s url: %w", e.ep.Protocol, ErrConfig)
		}
		switch {
		case a.BearerToken != "" && (a.Username != "" || a.Password != ""):
			return nil, fmt.Errorf("set either basic auth or a bearer token: %w", ErrConfig)
		case a.BearerToken != "":
			return &githttp.TokenAuth{Token: a.BearerToken}, nil
		case hasHTTP:
			return &githttp.BasicAuth{Username: a.Username, Password: a.Password}, nil
		}
		return nil, nil
	case "ssh":
		if hasHTTP {
			return nil, fmt.Errorf("http credentials given for an ssh url: %w", ErrConfig)
		}
		return a.sshMethod(e, dir, timeout)
	default:
		if hasHTTP || hasSSH {
			return nil, fmt.Errorf("credentials given for a %s url: %w", e.ep.Protocol, ErrConfig)
		}
		return nil, nil
	}
}

func (a Auth) sshMethod(e endpoint, dir string, timeout time.Duration) (transport.AuthMethod, error) {
	if len(a.SSHPrivateKey) == 0 {
		return nil, fmt.Errorf("ssh needs a private key: %w", ErrConfig)
	}
	pk, err := gitssh.NewPublicKeys(e.ep.User, a.SSHPrivateKey, a.SSHPassphrase)
	if err != nil {
		// The parser's message names no key material.
		return nil, fmt.Errorf("ssh private key: %v: %w", err, ErrConfig)
	}
	port := e.ep.Port
	if port == 0 {
		port = 22
	}
	hostPort := net.JoinHostPort(e.ep.Host, strconv.Itoa(port))
	switch {
	case a.InsecureSkipHostKeyCheck:
		pk.HostKeyCallback = ssh.InsecureIgnoreHostKey()
	case len(strings.TrimSpace(string(a.KnownHosts))) == 0:
		return nil, fmt.Errorf("ssh needs known_hosts (or InsecureSkipHostKeyCheck in tests): %w", ErrConfig)
	default:
		db, err := knownHostsDB(a.KnownHosts, dir)
		if err != nil {
			return nil, err
		}
		pk.HostKeyCallback = db.HostKeyCallback()
		// Offer only the key types known_hosts has for this host, or the
		// server may pick another type and fail the check.
		pk.HostKeyAlgorithms = db.HostKeyAlgorithms(hostPort)
	}
	return &timeoutAuth{PublicKeys: pk, timeout: timeout}, nil
}

// knownHostsDB parses known_hosts content; the parsers read only files, so
// the content passes through a temporary one.
func knownHostsDB(content []byte, dir string) (*knownhosts.HostKeyDB, error) {
	f, err := os.CreateTemp(dir, "known_hosts-")
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	defer os.Remove(f.Name())
	_, werr := f.Write(content)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return nil, fmt.Errorf("known_hosts: %w", werr)
	}
	db, err := knownhosts.NewDB(f.Name())
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %v: %w", strings.ReplaceAll(err.Error(), f.Name(), "known_hosts"), ErrConfig)
	}
	return db, nil
}

// timeoutAuth bounds the SSH dial: go-git dials SSH without the caller's
// context, so the client config's timeout is the only bound there.
type timeoutAuth struct {
	*gitssh.PublicKeys
	timeout time.Duration
}

func (t *timeoutAuth) ClientConfig() (*ssh.ClientConfig, error) {
	c, err := t.PublicKeys.ClientConfig()
	if err != nil {
		return nil, err
	}
	c.Timeout = t.timeout
	return c, nil
}
