package shard

import (
	"slices"
	"sort"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
)

// observation is what a member knows of one Lease: its version, its holder,
// when this member first saw that version (on its own clock) and how long
// the holder promised it would stay valid.
type observation struct {
	version  string
	holder   string
	seen     time.Time
	duration time.Duration
}

// observe returns the observation of l at now given the previous one. A new
// version restarts the clock; an unchanged one keeps its first sighting.
// trustRenewTime lets a first sighting date from the Lease's renewTime when
// that is older than now: used for members (only balance depends on it) so a
// replica that starts does not count members dead for hours as live; never
// for locks, whose safety must not depend on two clocks agreeing.
func observe(prev observation, known bool, l *coordinationv1.Lease, now time.Time, trustRenewTime bool) observation {
	o := observation{version: l.ResourceVersion, seen: now}
	if l.Spec.HolderIdentity != nil {
		o.holder = *l.Spec.HolderIdentity
	}
	if l.Spec.LeaseDurationSeconds != nil {
		o.duration = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	if known && prev.version == o.version {
		o.seen = prev.seen
		return o
	}
	if !known && trustRenewTime && l.Spec.RenewTime != nil && l.Spec.RenewTime.Time.Before(now) {
		o.seen = l.Spec.RenewTime.Time
	}
	return o
}

// expired reports whether the Lease lapsed: released (no holder) or not
// renewed for its duration as seen from here.
func (o observation) expired(now time.Time) bool {
	return o.holder == "" || !now.Before(o.seen.Add(o.duration))
}

// liveMembers returns the sorted identities of the live members: the others
// whose Lease has not expired, and self only when selfLive (its own renewal,
// not its Lease as seen through the watch, decides: a member that cannot
// renew must step back before the others count it dead).
func liveMembers(members map[string]observation, self string, selfLive bool, now time.Time) []string {
	var live []string
	for id, o := range members {
		if id == self || o.holder != id || o.expired(now) {
			continue
		}
		live = append(live, id)
	}
	if selfLive {
		live = append(live, self)
	}
	sort.Strings(live)
	return live
}

// lockAction is what Acquire does about a lock that already exists.
type lockAction string

const (
	lockHeld lockAction = "held" // another live holder: not now
	lockTake lockAction = "take" // expired, released, or left by an earlier run of this identity: update it
)

// decideLock judges an existing lock Lease. heldHere says this process
// holds the key already (a second Acquire must not succeed).
func decideLock(o observation, me string, heldHere bool, now time.Time) lockAction {
	switch {
	case heldHere:
		return lockHeld
	case o.holder == me, o.expired(now):
		return lockTake
	default:
		return lockHeld
	}
}

// view is the member set a replica acts on (Owns, Changes) and a different
// set computed since, waiting to settle.
type view struct {
	live    []string
	pending []string
	since   time.Time // when pending was first computed
	set     bool      // live was published once
}

// settle returns the view after computing live at now, and whether the
// published set changed. The first set is published at once; later a new
// set is published once it has been computed for hold without another in
// between. Under load a member's renewal can take seconds (it waits in the
// API server's queues behind the replica's own requests) and an informer
// can lag: a replica then dropped itself, or another live member, from its
// view and took it back within a second, 64–89 times in 20 minutes with
// 500 Apps, each time moving Apps and cancelling their syncs. A flap
// shorter than hold now changes nothing; a real departure or join takes
// effect hold later. Safety does not depend on the view: the App locks do.
func (v view) settle(live []string, now time.Time, hold time.Duration) (view, bool) {
	switch {
	case !v.set:
		return view{live: live, set: true}, true
	case slices.Equal(live, v.live):
		return view{live: v.live, set: true}, false
	case v.pending == nil || !slices.Equal(live, v.pending):
		return view{live: v.live, pending: live, since: now, set: true}, false
	case now.Sub(v.since) >= hold:
		return view{live: live, set: true}, true
	default:
		return v, false
	}
}

// settleHold is how long a new member set must hold before a replica acts
// on it: half the renew interval or of the margin between the renew
// deadline and the lease duration, whichever is shorter, so a dead
// member's Apps still move soon after its Lease lapses.
func settleHold(o Options) time.Duration {
	return min(o.RenewInterval, o.LeaseDuration-o.RenewDeadline) / 2
}
