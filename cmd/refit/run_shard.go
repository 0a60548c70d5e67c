package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/refit-gitops/refit/api/v1alpha1"
	"github.com/refit-gitops/refit/shard"
)

// shardFlags turn on sharding of App objects among replicas.
type shardFlags struct {
	on            bool
	leaseDuration time.Duration
	renewInterval time.Duration
	renewDeadline time.Duration
}

func (s *shardFlags) register(fl *pflag.FlagSet) {
	d := shard.DefaultOptions()
	fl.BoolVar(&s.on, "shard", false, "split the App objects among the replicas (each one a member Lease in refit's namespace) instead of leader election")
	fl.DurationVar(&s.leaseDuration, "shard-lease-duration", d.LeaseDuration, "with --shard: how long a dead replica's Apps wait before they move (whole seconds)")
	fl.DurationVar(&s.renewInterval, "shard-renew-interval", d.RenewInterval, "with --shard: how often a replica renews its Lease and the locks of its running syncs")
	fl.DurationVar(&s.renewDeadline, "shard-renew-deadline", d.RenewDeadline, "with --shard: a replica that could not renew for this long steps back (less than the lease duration)")
}

// shardIdentity is the replica's name among the members: --identity, the
// Pod's name (downward API), or the hostname.
func shardIdentity(flag string, getenv func(string) string, hostname func() (string, error)) (string, error) {
	if flag != "" {
		return flag, nil
	}
	if id := getenv("POD_NAME"); id != "" {
		return id, nil
	}
	h, err := hostname()
	if err != nil || h == "" {
		return "", fmt.Errorf("--shard: no identity (set --identity or POD_NAME): %w", errors.Join(err, errors.New("no hostname")))
	}
	return h, nil
}

// newShardMember returns the member of this replica (nil without --shard).
func (f *runFlags) newShardMember(client kubernetes.Interface, namespace string) (*shard.Member, error) {
	if !f.shard.on {
		return nil, nil
	}
	if !f.watchAppsMode() {
		return nil, errors.New("--shard: only for App objects (neither --config nor --repo)")
	}
	if f.leaderElect {
		return nil, errors.New("--shard and --leader-elect: choose one")
	}
	id, err := shardIdentity(f.identity, os.Getenv, os.Hostname)
	if err != nil {
		return nil, err
	}
	opts := shard.DefaultOptions()
	opts.LeaseDuration, opts.RenewInterval, opts.RenewDeadline = f.shard.leaseDuration, f.shard.renewInterval, f.shard.renewDeadline
	m, err := shard.New(client.CoordinationV1(), namespace, id, opts)
	if err != nil {
		return nil, fmt.Errorf("--shard: %w", err)
	}
	return m, nil
}

// runShard runs the member until ctx ends and re-enqueues every App when
// the members change (the controller starts those it gained and stops
// those it lost); wait returns once the member has left.
func (c *appController) runShard(ctx context.Context, idx cache.Indexer, queue workqueue.TypedRateLimitingInterface[string]) (wait func()) {
	if c.member == nil {
		return func() {}
	}
	log := logr.FromContextOrDiscard(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := c.member.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error(err, "shard member stopped")
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.member.Changes():
				log.Info("shard members changed", "members", c.member.Members())
				for _, key := range idx.ListKeys() {
					queue.Add(key)
				}
			}
		}
	}()
	return func() {
		wg.Wait()
		// The App loops have ended: the others may take our Apps at once.
		leave, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := c.member.Leave(leave); err != nil {
			log.Error(err, "shard member not removed")
		}
	}
}

// owns says whether this replica runs the App of key (always, unsharded).
func (c *appController) owns(key string) bool {
	return c.member == nil || c.member.Owns(key)
}

// appLock is the lock the App's loop takes around each sync (nil,
// unsharded).
func (c *appController) appLock(key string) func(ctx context.Context) (context.Context, func(), bool) {
	if c.member == nil {
		return nil
	}
	return func(ctx context.Context) (context.Context, func(), bool) {
		l, ok, err := c.member.Acquire(ctx, key)
		if err != nil {
			logr.FromContextOrDiscard(ctx).Error(err, "app lock not taken", "app", key)
		}
		if err != nil || !ok {
			return nil, nil, false
		}
		logr.FromContextOrDiscard(ctx).V(1).Info("app lock taken", "app", key, "replica", c.member.Identity())
		return l.Context(), func() {
			rel, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := l.Release(rel); err != nil {
				logr.FromContextOrDiscard(ctx).Error(err, "app lock not released", "app", key)
			}
		}, true
	}
}

// errNotLocked: the App's lock is another replica's for now; retried.
var errNotLocked = errors.New("lock held by another replica")

// underLock runs fn under the App's lock (sharded), for the controller's
// own writes that are not a sync (the prune of a deleted App).
func (c *appController) underLock(ctx context.Context, key string, fn func(ctx context.Context) error) error {
	lock := c.appLock(key)
	if lock == nil {
		return fn(ctx)
	}
	lctx, release, ok := lock(ctx)
	if !ok {
		return fmt.Errorf("app %s: %w", key, errNotLocked)
	}
	defer release()
	return fn(lctx)
}

// statusWrite is how the controller writes an App's status, and the
// event that goes with it, outside the App's loop (an invalid spec, a
// suspension, a name taken, a wiring that failed).
type statusWrite int

const (
	writeNothing statusWrite = iota // another replica's, or nothing changes
	writeNow                        // unsharded: no lock to take
	writeLocked                     // sharded: under the App's lock
)

// decideStatusWrite: sharded, only the replica that owns the App writes,
// and only under the App's lock, as its loop does; a status the
// informer's copy already has, with no event to emit, costs no Lease
// request.
func decideStatusWrite(sharded, owned, changes, event bool) statusWrite {
	switch {
	case !sharded:
		return writeNow
	case !owned || (!changes && !event):
		return writeNothing
	default:
		return writeLocked
	}
}

// writeOwnedStatus writes s as obj's status, and emits event (nil: none),
// as decideStatusWrite says.
func (c *appController) writeOwnedStatus(ctx context.Context, obj *v1alpha1.App, s v1alpha1.Sync, event func()) error {
	key := obj.Namespace + "/" + obj.Name
	at := s
	at.Now = metav1.Now()
	changes := !equality.Semantic.DeepEqual(obj.Status, v1alpha1.ComputeStatus(obj.Status.DeepCopy(), at))
	write := func(ctx context.Context) error {
		if event != nil {
			event()
		}
		return c.writeStatus(ctx, obj.Namespace, obj.Name, s)
	}
	switch decideStatusWrite(c.member != nil, c.owns(key), changes, event != nil) {
	case writeNow:
		return write(ctx)
	case writeLocked:
		return c.underLock(ctx, key, write)
	default:
		return nil
	}
}
