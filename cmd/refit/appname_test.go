package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestDefaultApp(t *testing.T) {
	root := t.TempDir()
	x, y := filepath.Join(root, "x"), filepath.Join(root, "team+ops")
	for _, d := range []string{x, y} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	link := filepath.Join(root, "link")
	if err := os.Symlink(x, link); err != nil {
		t.Fatal(err)
	}
	name := func(dir, repo, p string) string {
		t.Helper()
		app, err := defaultApp(dir, repo, p)
		if err != nil {
			t.Fatal(err)
		}
		if errs := validation.IsDNS1123Label(app); len(errs) > 0 {
			t.Fatalf("%q: %v", app, errs)
		}
		return app
	}
	readable := regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?-[0-9a-f]{8}$`)
	for _, tc := range []struct {
		name       string
		a, b       string
		same       bool
		wantPrefix string
	}{
		{"two folders", name(x, "", "."), name(y, "", "."), false, "x-"},
		{"one folder, two paths", name(x, "", "deploy"), name(x, "", "other"), false, "x-deploy-"},
		{"one folder, path spelled twice", name(x, "", "deploy/"), name(x, "", "./deploy"), true, "x-deploy-"},
		{"one folder through a symlink", name(x, "", "."), name(link, "", "."), true, "x-"},
		{"a folder name that is not a DNS label", name(y, "", "."), name(y, "", "."), true, "team-ops-"},
		{"one repository with and without credentials", name("", "https://me:secret@git.example.com/org/shop.git", "deploy"),
			name("", "https://git.example.com/org/shop", "deploy"), true, "shop-deploy-"},
		{"two repositories", name("", "https://git.example.com/org/shop.git", "."), name("", "https://git.example.com/org/billing.git", "."), false, "shop-"},
		{"scp-like SSH with two users", name("", "git@git.example.com:org/shop.git", "."), name("", "deploy@git.example.com:org/shop.git", "."), true, "shop-"},
		{"a folder and a repository of the same name", name(x, "", "."), name("", "file://"+x, "."), false, "x-"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if (tc.a == tc.b) != tc.same {
				t.Errorf("%q and %q: same %v, want %v", tc.a, tc.b, tc.a == tc.b, tc.same)
			}
			if !strings.HasPrefix(tc.a, tc.wantPrefix) || !readable.MatchString(tc.a) {
				t.Errorf("%q: want a DNS label starting %q and ending in 8 hex digits", tc.a, tc.wantPrefix)
			}
			if strings.Contains(tc.a, "secret") || strings.Contains(tc.a, "me") && strings.Contains(tc.a, "secret") {
				t.Errorf("%q carries a credential", tc.a)
			}
		})
	}
	long := name(filepath.Join(root, "x"), "", strings.Repeat("very-long-path/", 20))
	if len(long) > 49 || !readable.MatchString(long) {
		t.Errorf("long path: %q (%d bytes), want at most 49 bytes, a DNS label", long, len(long))
	}
}
