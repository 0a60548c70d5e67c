package shard

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func lease(rv, holder string, secs int32, renewed time.Time) *coordinationv1.Lease {
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{ResourceVersion: rv}}
	if holder != "" {
		l.Spec.HolderIdentity = &holder
	}
	l.Spec.LeaseDurationSeconds = &secs
	rt := metav1.NewMicroTime(renewed)
	l.Spec.RenewTime = &rt
	return l
}

func TestObserve(t *testing.T) {
	prev := observation{version: "5", holder: "a", seen: t0, duration: 4 * time.Second}
	for _, tc := range []struct {
		name  string
		prev  observation
		known bool
		lease *coordinationv1.Lease
		now   time.Time
		trust bool
		want  observation
	}{
		{"same version keeps its first sighting", prev, true, lease("5", "a", 4, t0.Add(-time.Hour)), t0.Add(3 * time.Second), false,
			observation{"5", "a", t0, 4 * time.Second}},
		{"new version restarts the clock", prev, true, lease("6", "a", 4, t0.Add(-time.Hour)), t0.Add(3 * time.Second), false,
			observation{"6", "a", t0.Add(3 * time.Second), 4 * time.Second}},
		{"first sighting of a lock: now, whatever its renewTime", observation{}, false, lease("5", "a", 4, t0.Add(-time.Hour)), t0, false,
			observation{"5", "a", t0, 4 * time.Second}},
		{"first sighting of a member: an old renewTime counts", observation{}, false, lease("5", "a", 4, t0.Add(-time.Hour)), t0, true,
			observation{"5", "a", t0.Add(-time.Hour), 4 * time.Second}},
		{"first sighting of a member: a renewTime ahead of our clock does not", observation{}, false, lease("5", "a", 4, t0.Add(time.Hour)), t0, true,
			observation{"5", "a", t0, 4 * time.Second}},
		{"no holder", observation{}, false, lease("5", "", 4, t0), t0, false,
			observation{"5", "", t0, 4 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := observe(tc.prev, tc.known, tc.lease, tc.now, tc.trust)
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(observation{})); diff != "" {
				t.Errorf("observe (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLiveMembers(t *testing.T) {
	d := 4 * time.Second
	members := map[string]observation{
		"fresh":    {version: "1", holder: "fresh", seen: t0, duration: d},
		"lapsing":  {version: "1", holder: "lapsing", seen: t0.Add(-d + time.Millisecond), duration: d},
		"dead":     {version: "1", holder: "dead", seen: t0.Add(-d), duration: d},
		"left":     {version: "1", holder: "", seen: t0, duration: d},
		"impostor": {version: "1", holder: "someone-else", seen: t0, duration: d},
		"me":       {version: "1", holder: "me", seen: t0, duration: d},
	}
	for _, tc := range []struct {
		name     string
		selfLive bool
		want     []string
	}{
		{"self renewing", true, []string{"fresh", "lapsing", "me"}},
		// Our own Lease still looks valid through the watch, but we could
		// not renew it: step back before the others count us dead.
		{"self not renewing", false, []string{"fresh", "lapsing"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := liveMembers(members, "me", tc.selfLive, t0)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("liveMembers (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideLock(t *testing.T) {
	d := 4 * time.Second
	for _, tc := range []struct {
		name     string
		o        observation
		heldHere bool
		now      time.Time
		want     lockAction
	}{
		{"held by another, renewed", observation{"1", "other", t0, d}, false, t0.Add(d - time.Millisecond), lockHeld},
		{"held by another, not renewed for its duration", observation{"1", "other", t0, d}, false, t0.Add(d), lockTake},
		{"released", observation{"1", "", t0, d}, false, t0, lockTake},
		{"left by an earlier run of this identity", observation{"1", "me", t0, d}, false, t0, lockTake},
		{"held by this process already", observation{"1", "me", t0, d}, true, t0, lockHeld},
		{"held by this process, even if lapsed in the watch", observation{"1", "me", t0, d}, true, t0.Add(time.Hour), lockHeld},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := decideLock(tc.o, "me", tc.heldHere, tc.now); got != tc.want {
				t.Errorf("decideLock = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestLockName(t *testing.T) {
	long := "ns/" + string(make([]byte, 0)) + "a"
	for range 250 {
		long += "a"
	}
	for _, tc := range []struct{ key, want string }{
		{"team-a/web", "refit-app-team-a.web"},
		{"team-a/web.v2", "refit-app-team-a.web.v2"},
		{long, "refit-app-h-"},
		{"Bad/Name", "refit-app-h-"},
	} {
		t.Run(tc.key[:min(len(tc.key), 20)], func(t *testing.T) {
			got := LockName(tc.key)
			if tc.want == "refit-app-h-" {
				if len(got) != len(tc.want)+32 || got[:len(tc.want)] != tc.want {
					t.Errorf("LockName(%q) = %q, want a hashed name", tc.key, got)
				}
				return
			}
			if got != tc.want {
				t.Errorf("LockName(%q) = %q, want %q", tc.key, got, tc.want)
			}
		})
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().validate(); err != nil {
		t.Errorf("DefaultOptions: %v", err)
	}
	bad := DefaultOptions()
	bad.LeaseDuration = 1500 * time.Millisecond
	if bad.validate() == nil {
		t.Errorf("a lease of 1.5s validated: a Lease counts whole seconds")
	}
	bad = DefaultOptions()
	bad.RenewDeadline = bad.LeaseDuration
	if bad.validate() == nil {
		t.Errorf("a renew deadline equal to the lease duration validated: a holder must give up before others may take over")
	}
}

// TestSettle: a member set that flaps for less than hold (a replica
// dropping itself while a slow renewal is in flight, another member's
// Lease seen late) changes nothing; a set that holds is published.
func TestSettle(t *testing.T) {
	hold := 2 * time.Second
	all, two := []string{"r0", "r1", "r2"}, []string{"r1", "r2"}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	type step struct {
		live        []string
		at          time.Duration
		wantLive    []string
		wantChanged bool
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"first set at once", []step{{all, 0, all, true}}},
		{"unchanged", []step{{all, 0, all, true}, {all, time.Second, all, false}}},
		{"flap shorter than hold: no change", []step{
			{all, 0, all, true}, {two, time.Second, all, false}, {two, 2900 * time.Millisecond, all, false}, {all, 2950 * time.Millisecond, all, false},
			// The flap's clock does not carry over to the next one.
			{two, 4 * time.Second, all, false}, {two, 5 * time.Second, all, false},
		}},
		{"departure published after hold", []step{
			{all, 0, all, true}, {two, time.Second, all, false}, {two, 2 * time.Second, all, false}, {two, 3 * time.Second, two, true},
			{two, 4 * time.Second, two, false},
		}},
		{"a different set restarts the clock", []step{
			{all, 0, all, true}, {two, time.Second, all, false}, {[]string{"r2"}, 2500 * time.Millisecond, all, false},
			{[]string{"r2"}, 4 * time.Second, all, false}, {[]string{"r2"}, 4500 * time.Millisecond, []string{"r2"}, true},
		}},
		{"join published after hold", []step{
			{two, 0, two, true}, {all, time.Second, two, false}, {all, 3 * time.Second, all, true},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v view
			for i, s := range tc.steps {
				var changed bool
				v, changed = v.settle(s.live, at(s.at), hold)
				if !cmp.Equal(v.live, s.wantLive) || changed != s.wantChanged {
					t.Fatalf("step %d (%v at %s): published %v changed %t; want %v changed %t", i, s.live, s.at, v.live, changed, s.wantLive, s.wantChanged)
				}
			}
		})
	}
}

func TestSettleHold(t *testing.T) {
	for _, tc := range []struct {
		lease, renew, deadline, want time.Duration
	}{
		{15 * time.Second, 5 * time.Second, 10 * time.Second, 2500 * time.Millisecond},
		{15 * time.Second, 3750 * time.Millisecond, 9375 * time.Millisecond, 1875 * time.Millisecond},
		{4 * time.Second, time.Second, 2500 * time.Millisecond, 500 * time.Millisecond},
		{4 * time.Second, time.Second, 3500 * time.Millisecond, 250 * time.Millisecond},
	} {
		if got := settleHold(Options{LeaseDuration: tc.lease, RenewInterval: tc.renew, RenewDeadline: tc.deadline}); got != tc.want {
			t.Errorf("settleHold(lease %s, renew %s, deadline %s) = %s; want %s", tc.lease, tc.renew, tc.deadline, got, tc.want)
		}
	}
}

// TestStillOurs: after Release's delete met a newer version, the lock Lease
// is deleted when that version is a renewal of ours, kept when another
// member took it over or it was recreated.
func TestStillOurs(t *testing.T) {
	ours := lease("7", "me", 4, t0)
	ours.UID = "u1"
	taken := lease("8", "other", 4, t0)
	taken.UID = "u1"
	recreated := lease("9", "me", 4, t0)
	recreated.UID = "u2"
	released := lease("10", "", 4, t0)
	released.UID = "u1"
	for _, tc := range []struct {
		name string
		cur  *coordinationv1.Lease
		want bool
	}{
		{"a late renewal of ours", ours, true},
		{"taken over", taken, false},
		{"recreated", recreated, false},
		{"no holder", released, false},
	} {
		if got := stillOurs(tc.cur, "u1", "me"); got != tc.want {
			t.Errorf("%s: stillOurs = %t; want %t", tc.name, got, tc.want)
		}
	}
}
