package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/refit-gitops/refit/config"
)

// TestAppsShareARepository wires apps as refit run does: apps on one URL
// and ref share one poller; another ref or other credentials get their
// own; every app is told of new commits through its own trigger.
func TestAppsShareARepository(t *testing.T) {
	dir := t.TempDir()
	app := func(name, url, ref, user string) config.App {
		a := config.App{Name: name, Source: config.Source{URL: url, Ref: ref}, Path: name}
		if user != "" {
			a.Source.UsernameFile, a.Source.PasswordFile = writeFile(t, dir, name+"-user", user), writeFile(t, dir, name+"-pass", "pw")
		}
		a.Defaults()
		return a
	}
	apps := []config.App{
		app("a", "https://git.example.com/mono.git", "main", ""),
		app("b", "https://git.example.com/mono.git", "main", ""),
		app("c", "https://git.example.com/mono.git", "main", ""),
		app("d", "https://git.example.com/mono.git", "release", ""),
		app("e", "https://git.example.com/mono.git", "main", "someone"),
		app("f", "https://git.example.com/other.git", "main", ""),
	}
	w := &appWiring{cacheDir: t.TempDir()}
	built, err := w.build(context.Background(), apps)
	if err != nil {
		t.Fatal(err)
	}
	if n := built.sources.Repositories(); n != 4 {
		t.Errorf("%d shared pollers, want 4 (mono@main, mono@release, mono@main as someone, other@main)", n)
	}
	seen := map[any]bool{}
	for _, a := range built.apps {
		if a.Trigger == nil || seen[a.Trigger] {
			t.Errorf("app %s: trigger %p shared or missing", a.Name, a.Trigger)
		}
		seen[a.Trigger] = true
	}
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
