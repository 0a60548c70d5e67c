package main

import (
	"testing"

	"github.com/refit-gitops/refit/config"
)

func TestHookPath(t *testing.T) {
	tests := []struct {
		name   string
		app    config.App
		object bool
		want   string
	}{
		{"a config entry", config.App{Name: "shop"}, false, "/hook/shop"},
		{"an App document of a config file keeps the config's path", config.App{Name: "shop", AppNamespace: "team"}, false, "/hook/shop"},
		{"an App object: its namespace and name", config.App{Name: "shop", AppNamespace: "team"}, true, "/hook/team/shop"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := hookPath(tc.app, tc.object); got != tc.want {
				t.Errorf("hookPath = %q, want %q", got, tc.want)
			}
		})
	}
}
