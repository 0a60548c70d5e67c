package apply

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/refit-gitops/refit/diff"
)

func indexInventory(ns, app, rv, entries string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: InventoryName(app), ResourceVersion: rv,
		Labels: map[string]string{InventoryLabel: "true"}}, Data: map[string]string{inventoryApp: app, inventoryKey: entries}}
}

// Two apps of one process apply the same new object at once: whatever the
// interleaving, exactly one is admitted. Without the claim both would be,
// as neither inventory lists the object yet.
func TestIndexCheckRace(t *testing.T) {
	shared := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "shared"}
	for round := range 200 {
		x := newInventoryIndex()
		var wg sync.WaitGroup
		admitted := make([]bool, 2)
		for i, app := range []string{"a", "b"} {
			wg.Go(func() {
				o := x.check(nil, ownersQuery{app: app, ns: "refit-system", refs: []diff.Ref{shared}}, []diff.Ref{shared}, true)
				admitted[i] = o.others[unversioned(shared)] == ""
			})
		}
		wg.Wait()
		if admitted[0] == admitted[1] {
			t.Fatalf("round %d: admitted %v, want exactly one of the two apps", round, admitted)
		}
	}
}

// A claim lives from the check until the watch shows the inventory write
// that made it durable (or claimTTL after it), and never outlives a
// forgotten app or an apply that wrote nothing.
func TestIndexClaimLifecycle(t *testing.T) {
	obj := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "x"}
	q := ownersQuery{app: "b", ns: "refit-system", refs: []diff.Ref{obj}}
	owner := func(x *inventoryIndex) string { return x.check(nil, q, nil, false).others[unversioned(obj)] }
	now := time.Unix(1000, 0)
	x := newInventoryIndex()
	x.now = func() time.Time { return now }

	x.check(nil, ownersQuery{app: "a", ns: "refit-system"}, []diff.Ref{obj}, true)
	if got := owner(x); got != "a (applying it now)" {
		t.Fatalf("after a's check: owner %q, want a's claim", got)
	}
	x.release("refit-system", "a")
	if got := owner(x); got != "" {
		t.Fatalf("after a stopped before writing: owner %q, want none", got)
	}

	x.check(nil, ownersQuery{app: "a", ns: "refit-system"}, []diff.Ref{obj}, true)
	x.written("refit-system", "a", []diff.Ref{obj}, "7")
	x.release("refit-system", "a")                      // a no-op once written
	x.set(indexInventory("refit-system", "a", "6", "")) // an older version seen late
	if got := owner(x); got != "a (applying it now)" {
		t.Fatalf("written, the watch behind: owner %q, want a's claim", got)
	}
	x.set(indexInventory("refit-system", "a", "7", "v1 ConfigMap shop x\n"))
	if got := owner(x); got != "a" {
		t.Fatalf("the watch caught up: owner %q, want a by its inventory", got)
	}
	if len(x.claims) != 0 {
		t.Errorf("claims %v, want none once the watch showed the write", x.claims)
	}

	x.written("refit-system", "c", []diff.Ref{{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "y"}}, "9")
	now = now.Add(claimTTL + time.Second)
	if o := x.check(nil, ownersQuery{app: "b", ns: "refit-system", all: true}, nil, false); o.others[diff.Ref{Kind: "ConfigMap", Namespace: "shop", Name: "y"}] != "" {
		t.Errorf("claim of c past its TTL still counts: %v", o.others)
	}

	x.check(nil, ownersQuery{app: "d", ns: "refit-system"}, []diff.Ref{{Version: "v1", Kind: "Secret", Namespace: "shop", Name: "z"}}, true)
	x.forget("refit-system", "d")
	if len(x.claims) != 0 {
		t.Errorf("claims %v after forget, want none", x.claims)
	}
}

// The index answers as ownersFrom did from a list: an inventory outside
// the inventory namespace vouches only for its own namespace, a query
// about some objects sees only those, and a deleted inventory is gone.
func TestIndexOwners(t *testing.T) {
	x := newInventoryIndex()
	x.set(indexInventory("refit-system", "billing", "1", "v1 ConfigMap shop invoices\nv1 Namespace _ billing\n"))
	x.set(indexInventory("team-a", "web", "2", "v1 ConfigMap team-a web\nv1 ConfigMap shop mine\n"))
	x.set(indexInventory("refit-system", "broken", "3", "not an inventory\n"))
	invoices := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "invoices"}
	mine := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "mine"}
	web := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "team-a", Name: "web"}

	o := x.check(nil, ownersQuery{app: "shop", ns: "refit-system", refs: []diff.Ref{invoices, mine, web}}, nil, false)
	want := map[diff.Ref]string{unversioned(invoices): "billing", unversioned(web): "web (inventory team-a/refit-inventory-web)"}
	if d := cmp.Diff(want, o.others); d != "" {
		t.Errorf("others (-want +got):\n%s", d)
	}
	if len(o.unreadable) != 1 || !strings.Contains(o.unreadable[0], "refit-inventory-broken") {
		t.Errorf("unreadable %q, want the broken one", o.unreadable)
	}
	o = x.check(nil, ownersQuery{app: "shop", ns: "refit-system", refs: []diff.Ref{mine}}, nil, false)
	if len(o.others) != 0 {
		t.Errorf("query about one object: others %v, want only what concerns it (nothing)", o.others)
	}
	x.onWatch(indexInventory("refit-system", "billing", "4", ""), true)
	o = x.check(nil, ownersQuery{app: "shop", ns: "refit-system", all: true}, nil, false)
	if _, ok := o.others[unversioned(invoices)]; ok || len(x.byRef) != 2 {
		t.Errorf("after billing's inventory was deleted: others %v, index %v", o.others, x.byRef)
	}
}
