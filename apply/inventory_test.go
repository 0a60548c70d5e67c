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
	mine := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: "mine"}
	shared := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: "shared"}
	theirs := diff.Ref{Version: "v1", Kind: "ConfigMap", Namespace: "a", Name: "theirs"}
	owned := map[diff.Ref]bool{mine: true, shared: true}
	others := map[diff.Ref]string{shared: "other", theirs: "other"}
	for _, tc := range []struct {
		name   string
		ref    diff.Ref
		prune  bool
		action Action
		reason string
	}{
		{"mine", mine, true, Deleted, ""},
		{"mine, pruning off", mine, false, NotPruned, "pruning is off"},
		{"also another app's", shared, true, SkippedNotOwned, "also in the inventory of app other"},
		{"only another app's", theirs, true, SkippedNotOwned, "not in the inventory of app shop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			action, reason := pruneDecision(tc.ref, tc.prune, "shop", owned, others)
			if action != tc.action || reason != tc.reason {
				t.Errorf("got %s %q, want %s %q", action, reason, tc.action, tc.reason)
			}
		})
	}
}
