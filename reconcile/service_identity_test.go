package reconcile

import "testing"

// Each app runs with the Reconciler of its identity, and each Reconciler in
// use keeps gates once: an identity's gate writes are its own.
func TestServiceReconcilersPerIdentity(t *testing.T) {
	base, teamA, teamB := &Reconciler{}, &Reconciler{}, &Reconciler{}
	apps := []App{{Name: "shared"}, {Name: "a1"}, {Name: "a2"}, {Name: "b"}}
	own := map[string]*Reconciler{"a1": teamA, "a2": teamA, "b": teamB}
	for app, want := range map[string]*Reconciler{"shared": base, "a1": teamA, "a2": teamA, "b": teamB} {
		if got := base.of(app, own); got != want {
			t.Errorf("app %s runs with the wrong Reconciler", app)
		}
	}
	keepers := base.keepers(apps, own)
	if len(keepers) != 3 || keepers[0] != base || keepers[1] != teamA || keepers[2] != teamB {
		t.Errorf("gate keepers: %d Reconcilers, want base, team-a, team-b once each", len(keepers))
	}
	// Every app with an identity of its own: refit's Reconciler keeps no
	// gates (it writes nothing for any app).
	if k := base.keepers(apps[1:], own); len(k) != 2 {
		t.Errorf("gate keepers without a shared app: %d, want 2", len(k))
	}
}
