package apply

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/refit-gitops/refit/diff"
)

func TestInventoryEncoding(t *testing.T) {
	refs := []diff.Ref{
		{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "settings"},
		{Group: "apps", Version: "v1", Kind: "Deployment", Namespace: "shop", Name: "web"},
		{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition", Name: "things.example.com"},
		{Version: "v1", Kind: "Namespace", Name: "shop"},
		{Version: "v1", Kind: "ConfigMap", Namespace: "shop", Name: "settings"}, // twice
	}
	text := encodeInventory(refs)
	want := `apiextensions.k8s.io/v1 CustomResourceDefinition _ things.example.com
apps/v1 Deployment shop web
v1 ConfigMap shop settings
v1 Namespace _ shop
`
	if d := cmp.Diff(want, text); d != "" {
		t.Fatalf("encoded (-want +got):\n%s", d)
	}
	back, err := decodeInventory(text)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(encodeInventory(refs[:4]), encodeInventory(back)); d != "" {
		t.Errorf("round trip (-want +got):\n%s", d)
	}
	if got := encodeInventory(nil); got != "" {
		t.Errorf("empty inventory encodes as %q", got)
	}
}

func TestInventoryDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ name, text, want string }{
		{"three fields", "v1 ConfigMap settings\n", "line 1"},
		{"bad apiVersion", "v1 ConfigMap a b\n/ Thing a b\n", "line 2"},
		{"no version", "apps/ Deployment a b\n", "bad apiVersion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeInventory(tc.text)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
	refs, err := decodeInventory("\n  \n")
	if err != nil || len(refs) != 0 {
		t.Errorf("blank lines: %v, %v", refs, err)
	}
}

func TestCheckApp(t *testing.T) {
	for _, tc := range []struct {
		app string
		ok  bool
	}{
		{"shop", true}, {"shop.prod", true}, {"", false}, {"Shop", false}, {"a/b", false}, {strings.Repeat("a", 250), false},
	} {
		t.Run(tc.app, func(t *testing.T) {
			if err := checkApp(tc.app); (err == nil) != tc.ok {
				t.Errorf("checkApp(%q) = %v, want ok=%v", tc.app, err, tc.ok)
			}
		})
	}
}

func TestPruneDecision(t *testing.T) {
	cmRef := func(ns, name string) diff.Ref {
		return diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: ns, Name: name}
	}
	mine, shared, theirs := cmRef("a", "mine"), cmRef("a", "shared"), cmRef("a", "theirs")
	nsA, nsB := diff.Ref{Version: "v1", Kind: "Namespace", Name: "a"}, diff.Ref{Version: "v1", Kind: "Namespace", Name: "b"}
	nsC := diff.Ref{Version: "v1", Kind: "Namespace", Name: "c"}
	thingCRD := crd("example.com", "Thing")
	otherCRD := crd("example.org", "Thing")
	otherCRD.SetName("things.example.org")
	thing := diff.Ref{Group: "example.com", Version: "v1", Kind: "Thing", Namespace: "b", Name: "t"}
	owned := map[diff.Ref]bool{}
	for _, r := range []diff.Ref{mine, shared, nsA, nsB, nsC, diff.RefOf(thingCRD), diff.RefOf(otherCRD)} {
		owned[unversioned(r)] = true
	}
	others := owners{others: map[diff.Ref]string{unversioned(shared): "other", unversioned(theirs): "other", unversioned(thing): "other"}}
	blind := owners{others: map[diff.Ref]string{}, unreadable: []string{"refit-system/refit-inventory-x: line 1: \"?\""}}
	// An HPA moved from autoscaling/v1 to v2 in Git: the v1 entry of the
	// inventory is the same object.
	hpaV1 := diff.Ref{Group: "autoscaling", Version: "v1", Kind: "HorizontalPodAutoscaler", Namespace: "a", Name: "web"}
	owned[unversioned(hpaV1)] = true
	inGit := map[diff.Ref]string{unversioned(hpaV1): "autoscaling/v2"}
	for _, tc := range []struct {
		name   string
		change diff.Change
		prune  bool
		action Action
		reason string
	}{
		{"mine", diff.Change{Ref: mine}, true, Deleted, ""},
		{"in Git under another version", diff.Change{Ref: hpaV1}, true, SkippedInGit, "in Git as autoscaling/v2"},
		{"mine, pruning off", diff.Change{Ref: mine}, false, NotPruned, "pruning is off"},
		{"also another app's", diff.Change{Ref: shared}, true, SkippedNotOwned, "also in the inventory of app other"},
		{"only another app's", diff.Change{Ref: theirs}, true, SkippedNotOwned, "not in the inventory of app shop"},
		{"namespace holding another app's objects", diff.Change{Ref: nsA}, true, SkippedNotOwned, "holds ConfigMap/a/shared of app other"},
		{"namespace holding another app's objects, pruning off", diff.Change{Ref: nsA}, false, SkippedNotOwned, "holds ConfigMap/a/shared of app other"},
		{"CRD of another app's objects", diff.Change{Ref: diff.RefOf(thingCRD), Live: thingCRD}, true, SkippedNotOwned, "holds Thing.example.com/b/t of app other"},
		{"CRD of another group", diff.Change{Ref: diff.RefOf(otherCRD), Live: otherCRD}, true, Deleted, ""},
		{"namespace holding a custom resource of another app", diff.Change{Ref: nsB}, true, SkippedNotOwned, "holds Thing.example.com/b/t of app other"},
		{"namespace holding nothing of another app", diff.Change{Ref: nsC}, true, Deleted, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			action, reason := pruneDecision(&tc.change, tc.prune, "shop", owned, others, inGit)
			if action != tc.action || reason != tc.reason {
				t.Errorf("got %s %q, want %s %q", action, reason, tc.action, tc.reason)
			}
		})
	}
	// Another inventory is unreadable: this app still prunes its own
	// objects, but not what could hold the unreadable app's objects.
	for _, tc := range []struct {
		name   string
		change diff.Change
		action Action
		reason string
	}{
		{"object, another inventory unreadable", diff.Change{Ref: mine}, Deleted, ""},
		{"namespace, another inventory unreadable", diff.Change{Ref: nsC}, SkippedNotOwned, "may hold objects of another app whose inventory is unreadable (refit-system/refit-inventory-x: line 1: \"?\")"},
		{"CRD, another inventory unreadable", diff.Change{Ref: diff.RefOf(otherCRD), Live: otherCRD}, SkippedNotOwned, "may hold objects of another app whose inventory is unreadable (refit-system/refit-inventory-x: line 1: \"?\")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			action, reason := pruneDecision(&tc.change, true, "shop", owned, blind, inGit)
			if action != tc.action || reason != tc.reason {
				t.Errorf("got %s %q, want %s %q", action, reason, tc.action, tc.reason)
			}
		})
	}
}
