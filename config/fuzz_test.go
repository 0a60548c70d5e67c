package config

import (
	"path"
	"slices"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzParse: no input panics Parse, and whatever it accepts holds the
// invariants the service relies on without checking again.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(""))
	f.Add([]byte("apiVersion: refit.dev/v1alpha1\nkind: Config\napps: [{name: a, source: {url: x}}]\n---\n"))
	f.Add([]byte("apiVersion: refit.dev/v1alpha1\nkind: Config\napps:\n- &a {name: a, source: {url: x}}\n- *a\n"))
	f.Add([]byte("apiVersion: refit.dev/v1alpha1\nkind: Config\napps: [{name: a, source: {url: x}, interval: 1ns, timeout: -1s}]\n"))
	f.Add([]byte("x: &a [1,1]\ny: [*a,*a]\n"))
	f.Add([]byte(goodApps))
	f.Add([]byte("apiVersion: refit.dev/v1alpha1\nkind: App\nmetadata: {name: a}\nspec: {source: {url: x}, suspend: true}\n"))
	f.Add([]byte("apiVersion: refit.dev/v1alpha1\nkind: App\nmetadata: {name: a, namespace: n}\nspec: {source: {url: x}, interval: 1h, path: a/../b}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		all := append(append([]App(nil), cfg.Apps...), cfg.Suspended...)
		if len(all) == 0 {
			t.Fatal("accepted with no apps")
		}
		names := map[string]bool{}
		for i := range all {
			a := all[i]
			if a.Suspend != slices.Contains(cfg.Suspended, a) {
				t.Fatalf("app %q: suspend %v but listed with the others", a.Name, a.Suspend)
			}
			if names[a.Name] {
				t.Fatalf("app name %q accepted twice", a.Name)
			}
			names[a.Name] = true
			if err := a.Validate(); err != nil {
				t.Fatalf("accepted app %q does not validate: %v", a.Name, err)
			}
			if a.Interval.Duration < time.Second || a.DriftInterval.Duration <= 0 || a.Timeout.Duration <= 0 {
				t.Fatalf("app %q: durations %s %s %s accepted", a.Name, a.Interval, a.DriftInterval, a.Timeout)
			}
			if len(validation.IsDNS1123Label(a.Namespace)) > 0 || len(validation.IsDNS1123Label(a.Name)) > 0 {
				t.Fatalf("app %q: namespace %q accepted", a.Name, a.Namespace)
			}
			if a.Prune == nil || a.Source.URL == "" || path.IsAbs(a.Path) || escapes(a.Path) {
				t.Fatalf("app %q: %+v accepted", a.Name, a)
			}
			if v := a.Source.Verify; v != nil && (v.SecretRef != nil) == (v.KeysFile != "") {
				t.Fatalf("app %q: verify %+v accepted", a.Name, v)
			}
		}
	})
}
