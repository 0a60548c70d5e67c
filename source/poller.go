package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/memory"
	"github.com/go-logr/logr"
)

// Log keys.
const (
	keyURL      = "url"
	keyRef      = "ref"
	keyRevision = "revision"
	keySigner   = "signer"
)

// Revision is one commit of the tracked ref, checked out on disk.
type Revision struct {
	// URL is the repository URL without credentials.
	URL string `json:"url"`
	// Ref is the ref the commit was found at (refs/heads/main,
	// refs/tags/v1.2.0); empty for a pinned commit found at no ref's tip.
	Ref     string    `json:"ref,omitempty"`
	Commit  string    `json:"commit"`
	Author  string    `json:"author"`
	Message string    `json:"message"`
	Time    time.Time `json:"time"`
	// Dir holds the commit's tree. It is kept until Options.Keep newer
	// revisions of the same Poller have been checked out.
	Dir string `json:"-"`
	// Fetched is true when this poll fetched from the remote, false when
	// the tree came from the cache.
	Fetched bool `json:"-"`
	// Files lists the commit's tree with its object hashes, to tell what
	// changed between two commits without reading the trees.
	Files *Files `json:"-"`
	// Signer is the trusted key that signed the commit (Options.Verify):
	// "OpenPGP key <key ID>" or "SSH key SHA256:<fingerprint>".
	Signer string `json:"signer,omitempty"`
}

// Options configure a Poller.
type Options struct {
	URL  string
	Ref  Ref
	Auth Auth
	// CacheDir holds checked-out trees, one sub-directory per URL and ref.
	CacheDir string
	// Keep is how many trees to keep per Poller (the current one included).
	Keep int
	// Timeout bounds each network call (listing refs, fetching).
	Timeout time.Duration
	// Checkout bounds what a checkout may write; zero fields take
	// DefaultCheckoutLimits.
	Checkout CheckoutLimits
	// Verify, when set, requires the commit to be signed by one of these
	// keys. A commit that is not is refused before its tree is written:
	// Poll returns an error wrapping ErrUnverified.
	Verify *Keys
}

// DefaultOptions returns options with the default Keep and Timeout.
func DefaultOptions() Options {
	return Options{Keep: 3, Timeout: time.Minute}
}

// Stats count what a Poller did, so callers and tests can tell a cheap poll
// (one ref listing) from a fetch.
type Stats struct {
	Polls     int
	Lists     int
	Fetches   int
	CacheHits int
}

// Poller tracks one ref of one repository. Poll is safe for concurrent use;
// polls run one at a time.
type Poller struct {
	opts Options
	ep   endpoint
	auth transport.AuthMethod
	dir  string

	// shared: a Hub owns the trees and removes them when no app holds
	// them; the Poller does not prune.
	shared bool

	mu    sync.Mutex
	stats Stats
	// refused is the last commit verification refused, and why: polls that
	// find the ref still there answer at once instead of fetching again.
	refused    Revision
	refusedErr error
}

// NewPoller checks the options and prepares authentication. It does no
// network I/O.
func NewPoller(opts Options) (*Poller, error) {
	def := DefaultOptions()
	if opts.Keep <= 0 {
		opts.Keep = def.Keep
	}
	if opts.Timeout <= 0 {
		opts.Timeout = def.Timeout
	}
	if opts.CacheDir == "" {
		return nil, fmt.Errorf("source: cache dir not set: %w", ErrConfig)
	}
	ep, err := parseEndpoint(opts.URL, &opts.Auth)
	if err != nil {
		return nil, &Error{URL: scrub(opts.URL, opts.Auth.secrets()...), Op: "parse url", Kind: ErrConfig,
			Detail: scrub(strings.TrimSuffix(err.Error(), ": "+ErrConfig.Error()), opts.Auth.secrets()...)}
	}
	p := &Poller{opts: opts, ep: ep}
	if err := opts.Ref.Validate(); err != nil {
		return nil, p.fail("parse ref", fmt.Errorf("%v: %w", err, ErrConfig))
	}
	id := ep.safe + "\n" + opts.Ref.String()
	if opts.Verify != nil {
		// Trees checked out without verification, or under other keys, must
		// not pass for verified ones.
		id += "\nverify " + opts.Verify.Digest()
	}
	if d := opts.Auth.digest(); d != "" {
		// Pollers with other credentials (which may see other commits)
		// get trees of their own: one never removes a tree another holds.
		id += "\nauth " + d
	}
	sum := sha256.Sum256([]byte(id))
	p.dir = filepath.Join(opts.CacheDir, hex.EncodeToString(sum[:8]))
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, p.fail("cache", err)
	}
	if p.auth, err = opts.Auth.method(ep, p.dir, opts.Timeout); err != nil {
		return nil, p.fail("auth", err)
	}
	return p, nil
}

// Stats returns what the Poller has done so far.
func (p *Poller) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// URL is the repository URL without credentials.
func (p *Poller) URL() string { return p.ep.safe }

// Poll returns the commit the ref points at now. It lists the remote's
// refs, and fetches (depth 1, that ref only) only when the commit is not
// already checked out in the cache. A pinned commit that is already checked
// out needs no network at all.
//
// With Options.Verify, a commit no trusted key signed is an error wrapping
// ErrUnverified (or a tree or pack refused at checkout, ErrTreeRefused),
// returned with the refused commit's Revision (without Dir)
// so that the caller can report on that commit.
func (p *Poller) Poll(ctx context.Context) (Revision, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	log := logr.FromContextOrDiscard(ctx)
	p.stats.Polls++
	if c := p.opts.Ref.Commit; c != "" {
		if p.refusedErr != nil && p.refused.Commit == c {
			return p.refused, p.refusedErr
		}
		if rev, ok := p.cached(c); ok {
			p.stats.CacheHits++
			return rev, nil
		}
	}
	p.stats.Lists++
	refs, err := p.list(ctx)
	if err != nil {
		return Revision{}, p.fail("list refs", err)
	}
	tgt, err := resolve(p.opts.Ref, refs)
	if err != nil {
		return Revision{}, p.fail("resolve ref", err)
	}
	if p.refusedErr != nil && p.refused.Commit == tgt.commit.String() {
		rev := p.refused
		rev.Ref = tgt.name.String()
		return rev, p.refusedErr
	}
	if rev, ok := p.cached(tgt.commit.String()); ok {
		p.stats.CacheHits++
		rev.Ref = tgt.name.String()
		log.V(1).Info("revision unchanged", keyURL, p.ep.safe, keyRef, rev.Ref, keyRevision, rev.Commit)
		return rev, nil
	}
	p.stats.Fetches++
	rev, err := p.fetch(ctx, tgt)
	if errors.Is(err, ErrUnverified) || errors.Is(err, ErrTreeRefused) {
		rev.Dir = ""
		p.refused, p.refusedErr = rev, err
		return rev, err
	}
	if err != nil {
		return Revision{}, err
	}
	kv := []any{keyURL, p.ep.safe, keyRef, rev.Ref, keyRevision, rev.Commit}
	if rev.Signer != "" {
		kv = append(kv, keySigner, rev.Signer)
	}
	log.Info("fetched revision", kv...)
	if p.shared {
		return rev, nil
	}
	if err := p.prune(rev.Commit); err != nil {
		return Revision{}, p.fail("prune cache", err)
	}
	return rev, nil
}

func (p *Poller) list(ctx context.Context) ([]*plumbing.Reference, error) {
	return network(ctx, p.opts.Timeout, func(ctx context.Context) ([]*plumbing.Reference, error) {
		rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{p.ep.url}})
		return rem.ListContext(ctx, &git.ListOptions{Auth: p.auth, PeelingOption: git.AppendPeeled})
	})
}

// network runs one network call under a timeout. go-git does not pass the
// context to every step (the SSH handshake ignores it), so the call runs
// aside and is abandoned when the context ends. Its result travels only
// through the channel, and it works on storage of its own, so an abandoned
// call cannot touch anything the caller still uses.
func network[T any](ctx context.Context, timeout time.Duration, call func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := call(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// verify refuses a commit that no trusted key signed, and says who signed
// it otherwise; without Options.Verify every commit passes. fetch calls it
// before the commit's tree is written anywhere.
func (p *Poller) verify(c *object.Commit) (string, error) {
	if p.opts.Verify == nil {
		return "", nil
	}
	signer, err := p.opts.Verify.Verify(c)
	if err != nil {
		return "", p.fail("verify signature", err)
	}
	return signer, nil
}

// fail wraps err as an *Error for this repository and ref.
func (p *Poller) fail(op string, err error) error {
	kind := ErrTransport
	for _, k := range []error{ErrUnverified, ErrConfig, ErrNotFound, ErrAuth, ErrHostKey, ErrTimeout} {
		if errors.Is(err, k) {
			kind = k
			break
		}
	}
	if kind == ErrTransport {
		kind = classify(err)
	}
	e := &Error{URL: p.ep.safe, Ref: p.opts.Ref.String(), Op: op, Kind: kind,
		Detail: scrub(strings.TrimSuffix(err.Error(), ": "+kind.Error()), p.opts.Auth.secrets()...)}
	switch {
	case errors.Is(err, context.Canceled):
		e.ctxErr = context.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		e.ctxErr = context.DeadlineExceeded
	}
	return e
}
