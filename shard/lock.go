package shard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Lock is a held per-App lock. Sync under Context; call Release after.
type Lock struct {
	m      *Member
	key    string
	name   string
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	cur  *coordinationv1.Lease
	once sync.Once
}

// LockName returns the name of the lock Lease of key (namespace/name):
// readable when it fits, a hash otherwise. A namespace has no dot, so the
// first dot splits the readable form back; the hashed form has none.
func LockName(key string) string {
	name := lockPrefix + strings.Replace(key, "/", ".", 1)
	if strings.Count(key, "/") == 1 && len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(key))
	return lockPrefix + "h-" + hex.EncodeToString(sum[:16])
}

// Acquire takes the lock of key (an App's namespace/name) if this member
// owns key and no one else holds it. ok is false when it is not this
// member's to take now: try again at the next change or a little later.
// err is a failure to talk to the API server. The lock is renewed until
// Release; its Context is done when the lock is lost (not renewed for
// RenewDeadline, or taken over), when ctx is done, or on Release.
func (m *Member) Acquire(ctx context.Context, key string) (lock *Lock, ok bool, err error) {
	if !m.Owns(key) {
		return nil, false, nil
	}
	name := LockName(key)
	m.mu.Lock()
	if m.heldHere[name] {
		m.mu.Unlock()
		return nil, false, nil
	}
	m.heldHere[name] = true
	m.mu.Unlock()
	defer func() {
		if !ok {
			m.mu.Lock()
			delete(m.heldHere, name)
			m.mu.Unlock()
		}
	}()

	now := m.opts.Clock.Now()
	got, err := m.leases.Create(ctx, m.lease(name, RoleLock, map[string]string{AppAnnotation: key}, now), metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = m.takeOver(ctx, name, now)
	}
	if err != nil || got == nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) || apierrors.IsAlreadyExists(err) {
			err = nil // another member won the race
		}
		if err != nil {
			err = fmt.Errorf("lease %s/%s: acquire: %w", m.namespace, name, err)
		}
		return nil, false, err
	}
	l := &Lock{m: m, key: key, name: name, cur: got, done: make(chan struct{})}
	l.ctx, l.cancel = context.WithCancel(ctx)
	go l.renew(now)
	return l, true, nil
}

// takeOver updates an existing lock Lease if it is free to take, judged
// from the watch's copy; a stale copy fails the update's version check.
func (m *Member) takeOver(ctx context.Context, name string, now time.Time) (*coordinationv1.Lease, error) {
	obj, exists, err := m.informer.GetStore().GetByKey(m.namespace + "/" + name)
	if err != nil || !exists {
		return nil, err // not seen yet: not now
	}
	m.mu.Lock()
	o, known := m.locks[name]
	m.mu.Unlock()
	l := obj.(*coordinationv1.Lease)
	if !known || o.version != l.ResourceVersion || decideLock(o, m.identity, false, now) != lockTake {
		return nil, nil
	}
	next := l.DeepCopy()
	fill(next, m.identity, m.opts.LeaseDuration, now, true)
	return m.leases.Update(ctx, next, metav1.UpdateOptions{})
}

// Key is the App this lock guards.
func (l *Lock) Key() string { return l.key }

// Context is done when the lock is lost or released: stop the sync.
func (l *Lock) Context() context.Context { return l.ctx }

// renew keeps the lock until released, and gives it up (cancelling the
// Context) when a renewal finds it taken or none succeeded for
// RenewDeadline, before another member may count it expired.
func (l *Lock) renew(lastOK time.Time) {
	defer close(l.done)
	m := l.m
	t := time.NewTicker(m.opts.RenewInterval / 2)
	defer t.Stop()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-t.C:
		}
		now := m.opts.Clock.Now()
		if now.Sub(lastOK) >= m.opts.RenewInterval {
			l.mu.Lock()
			next := l.cur.DeepCopy()
			l.mu.Unlock()
			fill(next, m.identity, m.opts.LeaseDuration, now, false)
			// Not cancelled by Release: a renewal that reached the server must
			// be seen, or Release's delete would miss its version.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(l.ctx), m.opts.RenewDeadline-now.Sub(lastOK))
			got, err := m.leases.Update(rctx, next, metav1.UpdateOptions{})
			cancel()
			switch {
			case err == nil:
				l.mu.Lock()
				l.cur = got
				l.mu.Unlock()
				lastOK = now
			case apierrors.IsConflict(err), apierrors.IsNotFound(err):
				l.cancel() // taken over or collected: no longer ours
				return
			}
		}
		if m.opts.Clock.Now().Sub(lastOK) >= m.opts.RenewDeadline {
			l.cancel()
			return
		}
	}
}

// Release ends the sync's hold: it stops renewing and deletes the lock
// Lease, unless another member took it meanwhile (version precondition).
// After a failed delete the lock lapses after LeaseDuration.
func (l *Lock) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		l.cancel()
		<-l.done
		l.mu.Lock()
		rv, uid := l.cur.ResourceVersion, l.cur.UID
		l.mu.Unlock()
		err = l.m.leases.Delete(ctx, l.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if apierrors.IsConflict(err) {
			err = l.deleteIfStillOurs(ctx, uid)
		}
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("lease %s/%s: release: %w", l.m.namespace, l.name, err)
		}
		l.m.mu.Lock()
		delete(l.m.heldHere, l.name)
		l.m.mu.Unlock()
	})
	return err
}

// deleteIfStillOurs deletes the lock Lease after Release's delete met a
// newer version: a renewal whose client gave up had reached the server, or
// another member took the lock over. Only the first is deleted; taken as
// the second, the Lease stayed for minutes showing this replica as the
// holder of an App it no longer synced.
func (l *Lock) deleteIfStillOurs(ctx context.Context, uid types.UID) error {
	cur, err := l.m.leases.Get(ctx, l.name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !stillOurs(cur, uid, l.m.identity) {
		return nil
	}
	rv := cur.ResourceVersion
	return l.m.leases.Delete(ctx, l.name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
}

// stillOurs says whether cur, the lock Lease as the server has it now, is
// still the one this member took (same UID) and held by it.
func stillOurs(cur *coordinationv1.Lease, uid types.UID, me string) bool {
	return cur.UID == uid && cur.Spec.HolderIdentity != nil && *cur.Spec.HolderIdentity == me
}
