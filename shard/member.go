package shard

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/watch"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/cache"
)

const (
	// LabelKey marks the Leases of this package; its value is RoleMember or
	// RoleLock.
	LabelKey   = "refit.dev/shard"
	RoleMember = "member"
	RoleLock   = "lock"
	// AppAnnotation on a lock Lease names the App it guards.
	AppAnnotation = "refit.dev/app"

	memberPrefix = "refit-shard-"
	lockPrefix   = "refit-app-"
)

// Clock is the time source; tests inject their own.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Options tune a Member. Every member of one group should use the same.
type Options struct {
	// LeaseDuration is how long a member Lease and a per-App lock stay
	// valid without renewal: how long a dead replica's Apps wait before
	// they move. Whole seconds (a Lease counts in seconds).
	LeaseDuration time.Duration
	// RenewInterval is how often the member Lease and held locks are
	// renewed.
	RenewInterval time.Duration
	// RenewDeadline is how long a member keeps a lock, or counts itself a
	// member, without a successful renewal. Below LeaseDuration, so it
	// steps back before the others may step in.
	RenewDeadline time.Duration
	// GCAfter is how long a Lease must have been expired before a member
	// deletes it (replicas killed without leaving, locks of deleted Apps).
	GCAfter time.Duration
	Clock   Clock
}

// DefaultOptions are client-go leader election's timings: 15 s leases
// renewed every 5 s, given up after 10 s.
func DefaultOptions() Options {
	return Options{
		LeaseDuration: 15 * time.Second,
		RenewInterval: 5 * time.Second,
		RenewDeadline: 10 * time.Second,
		GCAfter:       10 * time.Minute,
		Clock:         realClock{},
	}
}

func (o Options) validate() error {
	switch {
	case o.LeaseDuration < time.Second || o.LeaseDuration%time.Second != 0:
		return fmt.Errorf("lease duration %s: want whole seconds, at least 1s", o.LeaseDuration)
	case o.RenewInterval <= 0 || o.RenewInterval >= o.RenewDeadline:
		return fmt.Errorf("renew interval %s: want more than 0 and less than the renew deadline %s", o.RenewInterval, o.RenewDeadline)
	case o.RenewDeadline >= o.LeaseDuration:
		return fmt.Errorf("renew deadline %s: want less than the lease duration %s", o.RenewDeadline, o.LeaseDuration)
	case o.Clock == nil:
		return errors.New("no clock")
	}
	return nil
}

// Member is one replica's membership in the group of the Leases of one
// namespace. Use Owns to pick the Apps to reconcile, Changes to learn when
// to pick again, and Acquire around each sync.
type Member struct {
	leases    coordinationv1client.LeaseInterface
	namespace string
	identity  string
	opts      Options
	informer  cache.SharedIndexInformer
	changes   chan struct{}

	mu       sync.Mutex
	synced   bool
	selfOK   time.Time // start of the last successful renewal of our Lease
	self     *coordinationv1.Lease
	members  map[string]observation // by identity
	locks    map[string]observation // by lock Lease name
	heldHere map[string]bool        // lock Lease names held by this process
	view     view                   // the live members, settled
}

// New returns the member identity (unique among replicas: the Pod name) of
// the group whose Leases live in namespace. It does nothing until Run.
func New(leases coordinationv1client.LeasesGetter, namespace, identity string, opts Options) (*Member, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	if errs := validation.IsDNS1123Subdomain(memberPrefix + identity); len(errs) > 0 || identity == "" {
		return nil, fmt.Errorf("shard: identity %q: %s", identity, strings.Join(errs, "; "))
	}
	m := &Member{
		leases:    leases.Leases(namespace),
		namespace: namespace,
		identity:  identity,
		opts:      opts,
		changes:   make(chan struct{}, 1),
		members:   map[string]observation{},
		locks:     map[string]observation{},
		heldHere:  map[string]bool{},
	}
	selector := LabelKey + " in (" + RoleMember + "," + RoleLock + ")"
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return m.leases.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return m.leases.Watch(ctx, o)
		},
	}
	m.informer = cache.NewSharedIndexInformer(lw, &coordinationv1.Lease{}, 0, cache.Indexers{})
	if _, err := m.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.saw(obj, false) },
		UpdateFunc: func(_, obj any) { m.saw(obj, false) },
		DeleteFunc: func(obj any) { m.saw(obj, true) },
	}); err != nil {
		return nil, fmt.Errorf("shard: watch leases: %w", err)
	}
	return m, nil
}

// Identity is this member's name.
func (m *Member) Identity() string { return m.identity }

// Changes receives a value when the live members changed (or this member
// joined or stepped back): re-evaluate Owns for every App. Values coalesce.
func (m *Member) Changes() <-chan struct{} { return m.changes }

// Members returns the live members as this member sees them, sorted.
func (m *Member) Members() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.view.live)
}

// Owns reports whether key (an App's namespace/name) is this member's to
// reconcile as far as it knows now. Two members may both think so for a
// moment after one joins; Acquire settles it.
func (m *Member) Owns(key string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced && Owner(key, m.view.live) == m.identity
}

// Run registers the member and keeps its Lease, the view of the others and
// the garbage collection of lapsed Leases going until ctx is done. It does
// not remove the member's Lease then (as after a crash, the others wait for
// it to expire): call Leave for a clean shutdown.
func (m *Member) Run(ctx context.Context) error {
	go m.informer.RunWithContext(ctx)
	if !cache.WaitForCacheSync(ctx.Done(), m.informer.HasSynced) {
		return fmt.Errorf("shard: %s: leases: %w", m.identity, ctx.Err())
	}
	// Renewed before the view is first published, which is at once: it
	// then counts this member from the start.
	m.renewSelf(ctx)
	m.mu.Lock()
	m.synced = true
	m.mu.Unlock()
	m.evaluate()

	renew := time.NewTicker(m.opts.RenewInterval)
	defer renew.Stop()
	// Expiry is a matter of time passing, not of events: look often
	// enough that a dead member's Apps move soon after its lease lapses.
	look := time.NewTicker(m.opts.RenewInterval / 4)
	defer look.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
			m.renewSelf(ctx)
			m.evaluate()
			m.collect(ctx)
		case <-look.C:
			m.evaluate()
		}
	}
}

// Leave deletes this member's Lease so the others take its Apps at once.
// Call it after Run returned and the syncs under its locks ended.
func (m *Member) Leave(ctx context.Context) error {
	err := m.leases.Delete(ctx, memberPrefix+m.identity, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("lease %s/%s%s: delete: %w", m.namespace, memberPrefix, m.identity, err)
	}
	return nil
}

// saw records a Lease event.
func (m *Member) saw(obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = d.Obj, true
	}
	l, ok := obj.(*coordinationv1.Lease)
	if !ok {
		return
	}
	now := m.opts.Clock.Now()
	m.mu.Lock()
	switch l.Labels[LabelKey] {
	case RoleMember:
		id := strings.TrimPrefix(l.Name, memberPrefix)
		if deleted {
			delete(m.members, id)
		} else {
			prev, known := m.members[id]
			m.members[id] = observe(prev, known, l, now, true)
		}
	case RoleLock:
		if deleted {
			delete(m.locks, l.Name)
		} else {
			prev, known := m.locks[l.Name]
			m.locks[l.Name] = observe(prev, known, l, now, false)
		}
	}
	m.mu.Unlock()
	m.evaluate()
}

// evaluate recomputes the live members and signals a change.
func (m *Member) evaluate() {
	now := m.opts.Clock.Now()
	m.mu.Lock()
	selfLive := !m.selfOK.IsZero() && now.Sub(m.selfOK) < m.opts.RenewDeadline
	live := liveMembers(m.members, m.identity, selfLive, now)
	changed := false
	if m.synced {
		m.view, changed = m.view.settle(live, now, settleHold(m.opts))
	}
	m.mu.Unlock()
	if changed {
		select {
		case m.changes <- struct{}{}:
		default:
		}
	}
}

// renewSelf creates or renews this member's Lease. A failure is retried
// at the next tick; after RenewDeadline of failures evaluate drops this
// member from its own view.
func (m *Member) renewSelf(ctx context.Context) {
	start := m.opts.Clock.Now()
	name := memberPrefix + m.identity
	m.mu.Lock()
	cur := m.self
	m.mu.Unlock()
	var err error
	var got *coordinationv1.Lease
	if cur == nil {
		cur, err = m.leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			got, err = m.leases.Create(ctx, m.lease(name, RoleMember, nil, start), metav1.CreateOptions{})
		}
	}
	if err == nil && got == nil {
		next := cur.DeepCopy()
		fill(next, m.identity, m.opts.LeaseDuration, start, cur.Spec.HolderIdentity == nil || *cur.Spec.HolderIdentity != m.identity)
		got, err = m.leases.Update(ctx, next, metav1.UpdateOptions{})
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		// Conflict, NotFound (collected by another member while we were
		// away) or anything else: start from the server's copy next time.
		m.self = nil
		return
	}
	m.self = got
	m.selfOK = start
}

// lease builds a Lease of role held by this member.
func (m *Member) lease(name, role string, annotations map[string]string, now time.Time) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Namespace:   m.namespace,
		Labels:      map[string]string{LabelKey: role},
		Annotations: annotations,
	}}
	fill(l, m.identity, m.opts.LeaseDuration, now, true)
	return l
}

// fill sets the holder's fields; acquired marks a new holding.
func fill(l *coordinationv1.Lease, holder string, d time.Duration, now time.Time, acquired bool) {
	secs := int32(d / time.Second)
	t := metav1.NewMicroTime(now)
	l.Spec.HolderIdentity = &holder
	l.Spec.LeaseDurationSeconds = &secs
	l.Spec.RenewTime = &t
	if acquired {
		l.Spec.AcquireTime = &t
		n := int32(0)
		if l.Spec.LeaseTransitions != nil {
			n = *l.Spec.LeaseTransitions + 1
		}
		l.Spec.LeaseTransitions = &n
	}
}

// collect deletes Leases expired for GCAfter: members killed without
// leaving, locks of Apps deleted while a dead replica held them. The
// resourceVersion precondition spares a Lease renewed meanwhile.
func (m *Member) collect(ctx context.Context) {
	now := m.opts.Clock.Now()
	var names []string
	var versions []string
	m.mu.Lock()
	for id, o := range m.members {
		if id != m.identity && now.Sub(o.seen.Add(o.duration)) > m.opts.GCAfter {
			names, versions = append(names, memberPrefix+id), append(versions, o.version)
		}
	}
	for name, o := range m.locks {
		if !m.heldHere[name] && now.Sub(o.seen.Add(o.duration)) > m.opts.GCAfter {
			names, versions = append(names, name), append(versions, o.version)
		}
	}
	m.mu.Unlock()
	for i, name := range names {
		rv := versions[i]
		// Conflict or NotFound: someone renewed or collected it first.
		_ = m.leases.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	}
}
