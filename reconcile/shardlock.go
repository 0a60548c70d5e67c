package reconcile

import (
	"context"
	"time"
)

// lockRetry is how soon a pass polls again when the App's lock was not
// this replica's to take: another replica is finishing a sync of it, or
// the membership is settling after a replica joined or left.
const lockRetry = time.Second

// lock takes the app's lock for one pass that writes, when it has one.
func (l *appLoop) lock(ctx context.Context) (context.Context, func(), bool) {
	if l.app.Lock == nil {
		return ctx, func() {}, true
	}
	return l.app.Lock(ctx)
}

// slotForLock takes a slot of the pool before the App's lock, when it has
// both (sharded, --concurrent), and holds it until the pass ends: the pass
// then runs its pipeline without the pool, which would take the slot a
// second time. Locks taken first and slots waited for under them made a
// replica hold, and renew every renew interval, the lock of nearly every
// App it owns at a cold start (~230 at 500 Apps): renewals missed their
// deadline on the loaded API server and cancelled the syncs. Slot first,
// a replica holds at most --concurrent locks. The cost: a sharded sync
// keeps its slot through its health wait, which its lock must cover too.
func (l *appLoop) slotForLock(ctx context.Context) (release func(), ok bool) {
	p, isPooled := l.pipe.(pooled)
	if l.app.Lock == nil || !isPooled {
		return func() {}, true
	}
	if p.pool.acquire(ctx) != nil {
		return nil, false
	}
	l.pipe = p.pipeline
	return func() {
		l.pipe = p
		p.pool.release()
	}, true
}

// passAction is what a pass does with the commit its poll found.
type passAction string

const (
	passIdle passAction = "idle" // nothing new, no drift pass due
	// passRefuse: a commit verification refused, not yet reported.
	passRefuse passAction = "refuse"
	// passRefused: the refused commit, reported already.
	passRefused passAction = "refused"
	// passAnnounce: the bad commit remembered from an earlier run, which
	// this run reports once.
	passAnnounce  passAction = "announce"
	passNewCommit passAction = "new-commit" // skipped if unchanged, else synced
	passDrift     passAction = "drift"
	// passPollFailed: the poll failed with an error the App does not show
	// yet (the first, or a different one): shown once.
	passPollFailed passAction = "poll-failed"
	// passPollFailing: the poll failed with the error the App shows: it
	// backs off and writes nothing.
	passPollFailing passAction = "poll-failing"
	// passRecovered: the first good poll after failures found nothing to
	// sync: the App shows its last pass again.
	passRecovered passAction = "recovered"
)

// passFacts are what a pass's action depends on.
type passFacts struct {
	commit   string // the commit the poll found
	refused  bool   // the poller refused it (unverified, tree refused)
	applied  string
	failed   string
	announce bool
	driftDue bool
	// pollErr is the poll's error, when it failed without a commit to
	// refuse; shown is the poll error the App shows ("": none).
	pollErr, shown string
}

// decidePass chooses a pass's action from its poll.
func decidePass(f passFacts) passAction {
	switch {
	case f.pollErr != "" && f.pollErr != f.shown:
		return passPollFailed
	case f.pollErr != "":
		return passPollFailing
	}
	act := decideCommit(f)
	if f.shown != "" && !act.writes() {
		// A pass that writes shows where the App stands anyway.
		return passRecovered
	}
	return act
}

// decideCommit chooses the action for the commit a good poll found.
func decideCommit(f passFacts) passAction {
	switch {
	case f.refused && (f.commit != f.failed || f.announce):
		return passRefuse
	case f.refused:
		return passRefused
	case f.announce && f.commit == f.failed:
		return passAnnounce
	case f.commit != f.applied && f.commit != f.failed:
		return passNewCommit
	case f.commit != f.failed && f.driftDue:
		return passDrift
	default:
		return passIdle
	}
}

// writes says whether the action writes anything for the App: the
// commit's status, the App's status and events, its memory, its objects
// (even an "unchanged" skip reports itself). Sharded, such a pass runs
// only under the App's lock, so that during a handover two replicas never
// both write for one App. The others write nothing and take no lock: a
// poll that finds nothing new costs no Lease request.
func (a passAction) writes() bool {
	switch a {
	case passRefuse, passAnnounce, passNewCommit, passDrift, passPollFailed, passRecovered:
		return true
	default:
		return false
	}
}
