package source

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// DefaultLinger is how long a Hub keeps a repository's Poller once its
// last subscriber closed, in case one comes back: an App that restarts (a
// new spec, a reconcile request) closes its subscription and subscribes
// again at once, and should not cost a fetch.
const DefaultLinger = 5 * time.Second

// Hub shares one Poller per repository among the apps that track it: apps
// with the same URL, ref, credentials, verification keys and checkout
// limits get one ref listing per interval (the shortest any of them asks
// for) and one fetch per new commit, however many they are. A webhook for
// any of them wakes the repository once.
//
// The trees it checks out are immutable, one per commit, and removed only
// when no subscriber holds them (see Subscription.Poll): an app never
// renders a tree another app's poll is replacing or pruning.
//
// A repository's Poller lives while it has subscribers. Once the last one
// closed and none came back within the linger, its loop ends without
// listing the remote again and removes its trees and directory. A later
// subscriber gets a fresh Poller on the same directory, which polls only
// once the old loop has ended and cleaned up: the old one may be checking
// a tree out until then. (Waiting costs the new Poller at most the end of
// one checkout; a directory per Poller would instead leave directories
// behind a crash that no later run knows to remove, and lose the trees a
// restart of refit finds cached.)
type Hub struct {
	cacheDir string
	linger   time.Duration

	mu    sync.Mutex
	repos map[string]*shared
	order []*shared
	// leaving are the pollers that stopped for want of subscribers and are
	// still removing their trees, by key: the key's next poller waits.
	leaving map[string]*shared
	// gone sums what the stopped pollers did, so Stats never goes back.
	gone Stats
	ctx  context.Context // set while Run runs: repositories added then start at once
	// running are the repositories' poll loops: Run returns only once they
	// have, so no checkout is still being written after it.
	running sync.WaitGroup
}

// NewHub returns a Hub that checks trees out under cacheDir.
func NewHub(cacheDir string) *Hub {
	return &Hub{cacheDir: cacheDir, linger: DefaultLinger, repos: map[string]*shared{}, leaving: map[string]*shared{}}
}

// shared is one repository+ref and its subscribers.
type shared struct {
	key string
	p   *Poller
	// wake asks for a poll now (a webhook).
	wake *Trigger
	// kick tells the loop that its subscribers or their intervals changed.
	kick *Trigger
	// prev is the key's poller that stopped before this one was made and
	// may still be cleaning up (nil: none); this one polls once it is done.
	prev *shared
	// done is closed once the loop stopped for want of subscribers and
	// removed its trees.
	done chan struct{}

	mu       sync.Mutex
	interval time.Duration // the shortest of the subscribers'
	subs     []*Subscription
	// idleSince is when the last subscriber closed (zero while there are
	// subscribers).
	idleSince time.Time
	ready     chan struct{} // closed once the first poll ended
	// started and ended count the polls begun and ended; polled is closed
	// (and replaced) at the end of each (see Refresh).
	started, ended uint64
	polled         chan struct{}
	have           bool
	rev            Revision
	err            error
	// holds counts, per commit, the subscribers' slots holding its tree.
	holds map[string]int
}

// Subscription is one app's view of a shared repository.
type Subscription struct {
	s *shared
	// changed fires when the repository's commit (or error) changed.
	changed *Trigger
	// interval is how often this app asked to poll.
	interval time.Duration

	// last and prev are the two latest distinct commits Poll returned
	// (guarded by s.mu): their trees stay on disk.
	last, prev string
	closed     bool // guarded by s.mu
}

// Subscribe adds an app that polls opts every interval. Apps whose
// options name the same repository, ref, credentials, keys and limits
// share one Poller (opts.CacheDir is ignored: the Hub's is used).
func (h *Hub) Subscribe(opts Options, interval time.Duration) (*Subscription, error) {
	if interval <= 0 {
		interval = time.Minute
	}
	opts.CacheDir = h.cacheDir
	key, err := sharedKey(opts)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.repos[key]
	if s == nil {
		// The key's previous poller may still be cleaning the directory
		// NewPoller makes (and parses a temporary known_hosts file in): its
		// cleanup removes only trees, and the directory only when no newer
		// poller exists.
		p, err := NewPoller(opts)
		if err != nil {
			return nil, err
		}
		p.shared = true
		s = &shared{key: key, p: p, wake: NewTrigger(), kick: NewTrigger(), prev: h.leaving[key], done: make(chan struct{}),
			interval: interval, ready: make(chan struct{}), holds: map[string]int{}}
		h.repos[key] = s
		h.order = append(h.order, s)
		if ctx := h.ctx; ctx != nil {
			h.start(ctx, s)
		}
	}
	sub := &Subscription{s: s, changed: NewTrigger(), interval: interval}
	s.mu.Lock()
	s.subs = append(s.subs, sub)
	s.interval = shortest(s.subs)
	s.idleSince = time.Time{}
	s.mu.Unlock()
	// A shorter interval, or a poller that was about to stop: the loop
	// reschedules.
	s.kick.Fire()
	return sub, nil
}

// shortest is the shortest interval subs ask for (zero for none).
func shortest(subs []*Subscription) time.Duration {
	var d time.Duration
	for i, sub := range subs {
		if i == 0 || sub.interval < d {
			d = sub.interval
		}
	}
	return d
}

// sharedKey identifies what a Poller fetches and how: two apps with equal
// keys would fetch the same trees.
func sharedKey(opts Options) (string, error) {
	a := opts.Auth
	ep, err := parseEndpoint(opts.URL, &a)
	if err != nil {
		return "", &Error{URL: scrub(opts.URL, a.secrets()...), Op: "parse url", Kind: ErrConfig}
	}
	parts := []string{ep.url, opts.Ref.String(), a.digest(), opts.Timeout.String()}
	if opts.Verify != nil {
		parts = append(parts, "verify "+opts.Verify.Digest())
	}
	l := opts.Checkout.withDefaults()
	parts = append(parts, strconv.FormatInt(l.MaxFileBytes, 10), strconv.FormatInt(l.MaxTreeBytes, 10), strconv.Itoa(l.MaxEntries))
	sum := sha256.Sum256([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(sum[:]), nil
}

// Repositories is how many distinct repositories the Hub polls.
func (h *Hub) Repositories() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.order)
}

// Stats sums what the Hub's Pollers did, the stopped ones included.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.gone
	for _, s := range h.order {
		st.add(s.p.Stats())
	}
	return st
}

func (st *Stats) add(o Stats) {
	st.Polls += o.Polls
	st.Lists += o.Lists
	st.Fetches += o.Fetches
	st.CacheHits += o.CacheHits
}

// Run polls every repository until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	h.mu.Lock()
	h.ctx = ctx
	for _, s := range h.order {
		h.start(ctx, s)
	}
	h.mu.Unlock()
	<-ctx.Done()
	h.mu.Lock()
	h.ctx = nil
	h.mu.Unlock()
	h.running.Wait()
}

// start runs s's loop until ctx ends or s stops for want of subscribers.
func (h *Hub) start(ctx context.Context, s *shared) {
	h.running.Go(func() { s.run(ctx, h) })
}

// step is what a repository's loop does next.
type step int

const (
	stepPoll step = iota
	stepWait
	stepStop // no subscriber came back within the linger
)

// loopState is what the loop's next step depends on.
type loopState struct {
	subs      int
	interval  time.Duration // the shortest of the subscribers'
	idleSince time.Time     // when the last subscriber closed
	last      time.Time     // when the last poll ended (zero: none yet)
	failures  int           // consecutive transient poll failures
}

// nextStep decides the loop's next step at now, and how long to wait
// before deciding again: a poll when one is due (at once for the first,
// every interval, sooner after transient failures), a stop once the
// poller has had no subscriber for linger. The interval is the one asked
// for now, so a subscriber joining with a shorter one, or leaving with
// the shortest, moves the next poll.
func nextStep(st loopState, now time.Time, linger time.Duration) (step, time.Duration) {
	if st.subs == 0 {
		if left := st.idleSince.Add(linger).Sub(now); left > 0 {
			return stepWait, left
		}
		return stepStop, 0
	}
	if st.last.IsZero() {
		return stepPoll, 0
	}
	gap := st.interval
	if st.failures > 0 {
		// A transient failure is retried sooner, doubling from a second.
		gap = min(gap, time.Second<<min(st.failures-1, 10))
	}
	if left := st.last.Add(gap).Sub(now); left > 0 {
		return stepWait, left
	}
	return stepPoll, 0
}

// run polls the repository when due, at once on a wake, and tells the
// subscribers when the commit moved; it stops when ctx ends, or removes
// its trees and stops once it has had no subscriber for the linger.
func (s *shared) run(ctx context.Context, h *Hub) {
	if s.prev != nil {
		// The previous poller of the key may still be writing or removing
		// trees in the directory this one checks out into.
		select {
		case <-s.prev.done:
		case <-ctx.Done():
			return
		}
	}
	log := logr.FromContextOrDiscard(ctx)
	var last time.Time
	failures := 0
	for {
		s.mu.Lock()
		st := loopState{subs: len(s.subs), interval: s.interval, idleSince: s.idleSince, last: last, failures: failures}
		s.mu.Unlock()
		next, wait := nextStep(st, time.Now(), h.linger)
		switch next {
		case stepStop:
			if h.retire(s) {
				if err := s.cleanup(h); err != nil {
					log.Error(err, "checkout cache not cleaned", keyURL, s.p.URL())
				}
				log.V(1).Info("repository no longer polled: no app tracks it", keyURL, s.p.URL())
				return
			}
			continue // a subscriber came back meanwhile
		case stepWait:
			timer := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-s.wake.C():
				timer.Stop()
				if st.subs == 0 {
					continue // nobody to poll for
				}
			case <-s.kick.C():
				timer.Stop()
				continue
			case <-timer.C:
				continue
			}
		}
		s.mu.Lock()
		s.started++
		s.mu.Unlock()
		rev, err := s.p.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		s.publish(rev, err)
		if err := s.collect(); err != nil {
			log.Error(err, "checkout cache not cleaned", keyURL, s.p.URL())
		}
		last = time.Now()
		if err != nil && !errors.Is(err, ErrUnverified) && !errors.Is(err, ErrTreeRefused) {
			failures++
		} else {
			failures = 0
		}
	}
}

// retire takes s out of the Hub if it still has no subscriber; a later
// Subscribe of its key then makes a new poller, which waits for s.done.
func (h *Hub) retire(s *shared) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	idle := len(s.subs) == 0
	s.mu.Unlock()
	if !idle {
		return false
	}
	delete(h.repos, s.key)
	h.order = slices.DeleteFunc(h.order, func(o *shared) bool { return o == s })
	h.leaving[s.key] = s
	h.gone.add(s.p.Stats())
	return true
}

// cleanup removes the trees of a retired poller, and its directory when
// no newer poller of its key exists, then closes done. No subscriber holds
// a tree: each let go of its own when it closed.
func (s *shared) cleanup(h *Hub) error {
	defer close(s.done)
	// This loop alone checked trees out here, and it has stopped; the
	// key's next poller waits for done.
	err := s.p.removeExcept(nil)
	if errors.Is(err, os.ErrNotExist) {
		err = nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leaving[s.key] != s {
		return err // cannot happen: a later poller retires only after done
	}
	delete(h.leaving, s.key)
	if h.repos[s.key] == nil {
		// Under the Hub's lock: a new poller of the key makes the
		// directory again only after this.
		err = errors.Join(err, os.RemoveAll(s.p.dir))
	}
	return err
}

// publish records a poll's result and wakes the subscribers if it differs
// from the last one.
func (s *shared) publish(rev Revision, err error) {
	s.mu.Lock()
	first := !s.have
	changed := first || rev.Commit != s.rev.Commit || (err == nil) != (s.err == nil)
	if err == nil && s.have && s.err == nil && rev.Commit == s.rev.Commit {
		rev = s.rev // keep the one Files index the subscribers share
	}
	s.rev, s.err, s.have = rev, err, true
	s.ended++
	if s.polled != nil {
		close(s.polled)
	}
	s.polled = make(chan struct{})
	subs := s.subs
	s.mu.Unlock()
	if changed {
		for _, sub := range subs {
			sub.changed.Fire()
		}
	}
	if first {
		// After the fires: a subscriber that has polled the first result
		// finds its own fire already pending, never a later one.
		close(s.ready)
	}
}

// collect removes the trees no subscriber holds, except the head's.
func (s *shared) collect() error {
	s.mu.Lock()
	keep := map[string]bool{s.rev.Commit: true}
	for c, n := range s.holds {
		if n > 0 {
			keep[c] = true
		}
	}
	s.mu.Unlock()
	// Only this goroutine checks trees out (Poll) and it is here: no tree
	// is half-written. A tree not kept cannot become held meanwhile:
	// subscribers take only the head, which this goroutine alone moves.
	return s.p.removeExcept(keep)
}

// Poll returns the repository's commit as the shared poller last saw it,
// without network I/O; before the first poll has ended it waits for it.
// The tree of a returned Revision stays on disk until this subscription's
// Poll has returned two other commits since: an app may keep rendering a
// commit while it polls once more and finds a newer one.
func (sub *Subscription) Poll(ctx context.Context) (Revision, error) {
	s := sub.s
	select {
	case <-s.ready:
	case <-ctx.Done():
		return Revision{}, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rev, err := s.rev, s.err
	if err == nil && rev.Dir != "" && rev.Commit != sub.last && !sub.closed {
		s.holds[rev.Commit]++
		if sub.prev != "" {
			s.holds[sub.prev]--
			if s.holds[sub.prev] <= 0 {
				delete(s.holds, sub.prev)
			}
		}
		sub.prev, sub.last = sub.last, rev.Commit
	}
	return rev, err
}

// Refresh asks for a poll of the repository now and waits until one that
// began after the call has ended, so that Poll then returns the remote's
// head as it is, not as the last interval saw it: a reconcile request
// (refit reconcile app) must see a commit pushed a moment ago, also when
// the poller is shared with Apps that keep it alive.
func (sub *Subscription) Refresh(ctx context.Context) error {
	s := sub.s
	s.mu.Lock()
	want := s.started + 1 // the polls end in the order they begin: one loop
	s.mu.Unlock()
	s.wake.Fire()
	for {
		s.mu.Lock()
		done, polled := s.ended >= want, s.polled
		s.mu.Unlock()
		if done {
			return nil
		}
		if polled == nil {
			polled = s.ready // no poll has ended yet: the first closes ready
		}
		select {
		case <-polled:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close ends the subscription (its app stopped for good, or restarts
// with a new one): the trees it held may go, and it is told of no more
// commits. Call it once the app reads none of the trees it polled. The
// repository's poller keeps running for its other subscribers; without
// any, it stops after the Hub's linger.
func (sub *Subscription) Close() {
	s := sub.s
	s.mu.Lock()
	if sub.closed {
		s.mu.Unlock()
		return
	}
	sub.closed = true
	for _, c := range []string{sub.last, sub.prev} {
		if c == "" {
			continue
		}
		if s.holds[c]--; s.holds[c] <= 0 {
			delete(s.holds, c)
		}
	}
	sub.last, sub.prev = "", ""
	s.subs = slices.DeleteFunc(s.subs, func(o *Subscription) bool { return o == sub })
	if len(s.subs) == 0 {
		s.idleSince = time.Now()
	} else {
		s.interval = shortest(s.subs)
	}
	s.mu.Unlock()
	s.kick.Fire()
}

// Changed fires when the repository's commit changed: the app should poll.
func (sub *Subscription) Changed() *Trigger { return sub.changed }

// Wake is the repository's own trigger, for webhooks: firing it polls the
// remote once for every subscriber.
func (sub *Subscription) Wake() *Trigger { return sub.s.wake }

// URL is the repository URL without credentials.
func (sub *Subscription) URL() string { return sub.s.p.URL() }

// removeExcept removes the checked-out trees (and leftovers of a crash)
// whose commits are not in keep.
func (p *Poller) removeExcept(keep map[string]bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		var commit string
		switch {
		case strings.HasPrefix(name, tmpPrefix):
			if err := os.RemoveAll(filepath.Join(p.dir, name)); err != nil {
				return err
			}
			continue
		case strings.HasSuffix(name, metaSuffix):
			commit = strings.TrimSuffix(name, metaSuffix)
		case strings.HasSuffix(name, filesSuffix):
			commit = strings.TrimSuffix(name, filesSuffix)
		case e.IsDir() && len(name) >= 40:
			commit = name
		default:
			continue // known_hosts and such
		}
		if keep[commit] {
			continue
		}
		// The metadata goes first: a tree without it is not cached.
		for _, f := range []string{commit + metaSuffix, commit + filesSuffix, commit} {
			if err := os.RemoveAll(filepath.Join(p.dir, f)); err != nil {
				return err
			}
		}
	}
	return nil
}
