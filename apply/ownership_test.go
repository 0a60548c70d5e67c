package apply

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/refit-gitops/refit/diff"
)

func TestClaimedByOthers(t *testing.T) {
	cm := func(ns, name string) diff.Ref {
		return diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: ns, Name: name}
	}
	hpa := func(version string) diff.Ref {
		return diff.Ref{Group: "autoscaling", Version: version, Kind: "HorizontalPodAutoscaler", Namespace: "a", Name: "web"}
	}
	others := map[diff.Ref]string{
		unversioned(cm("a", "theirs")): "billing",
		unversioned(hpa("v1")):         "web (inventory team-b/refit-inventory-web)",
	}
	for _, tc := range []struct {
		name string
		ref  diff.Ref
		want string // "" when the object is this app's to apply
	}{
		{"nobody else's", cm("a", "mine"), ""},
		{"another app's", cm("a", "theirs"), "belongs to app billing"},
		{"same name in another namespace", cm("b", "theirs"), ""},
		{"another app's under another API version", hpa("v2"), "belongs to app web (inventory team-b/refit-inventory-web)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := claimedByOthers([]*diff.Change{{Ref: tc.ref, Source: "app.yaml"}}, others)
			switch {
			case tc.want == "" && len(got) > 0:
				t.Errorf("refused: %v", got[0])
			case tc.want != "" && len(got) != 1:
				t.Errorf("not refused, want %q", tc.want)
			case tc.want != "" && !strings.Contains(got[0].Error(), tc.want) || tc.want != "" && !strings.Contains(got[0].Error(), "(app.yaml)"):
				t.Errorf("error %q, want it to name the file and say %q", got[0], tc.want)
			}
		})
	}
}

func TestRefitStateRefused(t *testing.T) {
	obj := func(apiVersion, kind, ns, name string, labels map[string]string) *unstructured.Unstructured {
		u := newUnstructured(apiVersion, kind, ns, name)
		u.SetLabels(labels)
		return u
	}
	for _, tc := range []struct {
		name    string
		obj     *unstructured.Unstructured
		action  diff.Action
		refused bool
	}{
		{"an inventory by its name", obj("v1", "ConfigMap", "refit-system", "refit-inventory-shop", nil), diff.Create, true},
		{"an inventory in an app's namespace", obj("v1", "ConfigMap", "team-b", "refit-inventory-web", nil), diff.Update, true},
		{"anything with the inventory label", obj("v1", "Secret", "team-a", "x", map[string]string{InventoryLabel: "true"}), diff.Create, true},
		{"an unchanged inventory is still refused", obj("v1", "ConfigMap", "a", "refit-inventory-a", nil), diff.Unchanged, true},
		{"a ConfigMap of the app", obj("v1", "ConfigMap", "refit-system", "settings", nil), diff.Create, false},
		{"another kind with the prefix", obj("example.com/v1", "ConfigMap", "a", "refit-inventory-x", nil), diff.Create, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plan := []diff.Change{{Ref: diff.RefOf(tc.obj), Source: "state.yaml", Action: tc.action, Desired: tc.obj}}
			got := refitState(plan)
			if (len(got) > 0) != tc.refused {
				t.Fatalf("refused %v, want %v", got, tc.refused)
			}
			if tc.refused && !strings.Contains(got[0].Error(), "refit's state never comes from Git") {
				t.Errorf("error %q does not say why", got[0])
			}
		})
	}
	// A deletion the inventory planned is not an object from Git.
	del := []diff.Change{{Ref: diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: "refit-inventory-a"}, Action: diff.Delete}}
	if got := refitState(del); len(got) > 0 {
		t.Errorf("a deletion refused: %v", got)
	}
}

func TestEmptyRender(t *testing.T) {
	for _, tc := range []struct {
		name             string
		desired, prunes  int
		prune, allow, ok bool
	}{
		{"objects rendered", 3, 2, true, false, true},
		{"nothing rendered, nothing to prune", 0, 0, true, false, true},
		{"nothing rendered, pruning off", 0, 5, false, false, true},
		{"nothing rendered, would prune everything", 0, 5, true, false, false},
		{"nothing rendered, allowed", 0, 5, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := Options{App: "shop", Prune: tc.prune, AllowEmpty: tc.allow}
			err := emptyRender(opts, tc.desired, tc.prunes)
			if (err == nil) != tc.ok {
				t.Fatalf("error %v, want ok=%v", err, tc.ok)
			}
			if err != nil && (!errors.Is(err, ErrEmptyRender) || !strings.Contains(err.Error(), "app shop") || !strings.Contains(err.Error(), "5 objects")) {
				t.Errorf("error %q: want ErrEmptyRender naming the app and the count", err)
			}
		})
	}
}

func TestOwnInventory(t *testing.T) {
	cm := func(labels map[string]string, app string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: InventoryName("shop"), Labels: labels},
			Data: map[string]string{inventoryApp: app}}
	}
	label := map[string]string{InventoryLabel: "true"}
	for _, tc := range []struct {
		name string
		cm   *corev1.ConfigMap
		want string
	}{
		{"ours", cm(label, "shop"), ""},
		{"no label", cm(nil, "shop"), "no label refit.dev/inventory"},
		{"another app named", cm(label, "billing"), `names app "billing"`},
		{"no app named", cm(label, ""), `names app ""`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ownInventory(tc.cm, "shop")
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMemoryEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    Memory
		data map[string]string
	}{
		{"empty", Memory{}, map[string]string{}},
		{"attempt", Memory{Attempt: "abc", Attempts: 2}, map[string]string{memoryAttempt: "abc", memoryAttempts: "2"}},
		{"bad", Memory{Bad: "def", Reason: "nothing applied"}, map[string]string{memoryBad: "def", memoryReason: "nothing applied"}},
		{"bad, with its outcome", Memory{Bad: "def", Reason: "r", Outcome: "rollout-failed"},
			map[string]string{memoryBad: "def", memoryReason: "r", memoryOutcome: "rollout-failed"}},
		{"both", Memory{Attempt: "abc", Attempts: 1, Bad: "def", Reason: "r"},
			map[string]string{memoryAttempt: "abc", memoryAttempts: "1", memoryBad: "def", memoryReason: "r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := cmp.Diff(tc.data, encodeMemory(tc.m)); d != "" {
				t.Errorf("encoded (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tc.m, decodeMemory(tc.data)); d != "" {
				t.Errorf("decoded (-want +got):\n%s", d)
			}
		})
	}
	if got := decodeMemory(map[string]string{memoryAttempt: "abc", memoryAttempts: "x"}); got.Attempts != 1 {
		t.Errorf("unreadable count decodes as %d starts, want 1", got.Attempts)
	}
	long := encodeMemory(Memory{Bad: "def", Reason: strings.Repeat("e", 10*maxReason)})
	if n := len(long[memoryReason]); n > maxReason+len("…") {
		t.Errorf("reason kept at %d bytes, want at most %d", n, maxReason)
	}
}

func TestOwnersFrom(t *testing.T) {
	inv := func(ns, app, entries string) corev1.ConfigMap {
		return corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: InventoryName(app), Labels: map[string]string{InventoryLabel: "true"}},
			Data: map[string]string{inventoryApp: app, inventoryKey: entries}}
	}
	forged := inv("team-a", "x", "")
	forged.Name = InventoryName("other-name")
	o := ownersFrom([]corev1.ConfigMap{
		inv("refit-system", "shop", "v1 ConfigMap shop mine\n"),
		inv("refit-system", "billing", "v1 ConfigMap shop invoices\nv1 Namespace _ billing\n"),
		inv("team-a", "web", "v1 ConfigMap team-a web\nv1 ConfigMap shop mine\nrbac.authorization.k8s.io/v1 ClusterRole _ admin\n"),
		inv("refit-system", "broken", "not an inventory\n"),
		forged,
	}, "refit-system", "shop")
	want := map[diff.Ref]string{
		{Kind: "ConfigMap", Namespace: "shop", Name: "invoices"}: "billing",
		{Kind: "Namespace", Name: "billing"}:                     "billing",
		{Kind: "ConfigMap", Namespace: "team-a", Name: "web"}:    "web (inventory team-a/refit-inventory-web)",
	}
	if d := cmp.Diff(want, o.others); d != "" {
		t.Errorf("others (-want +got):\n%s", d)
	}
	if len(o.unreadable) != 2 || !strings.Contains(o.unreadable[0], "refit-inventory-broken") || !strings.Contains(o.unreadable[1], `names app "x"`) {
		t.Errorf("unreadable: %q, want the corrupt one and the one named for another app", o.unreadable)
	}
}
