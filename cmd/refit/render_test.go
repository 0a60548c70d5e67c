package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/refit-gitops/refit/test/gitserver"
)

const renderCM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\ndata:\n  k: v\n"

func runRefit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestRenderCommand(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"deploy/kustomization.yaml": "resources:\n- cm.yaml\nnamePrefix: x-\n",
		"deploy/cm.yaml":            renderCM,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv := gitserver.New(t, gitserver.DefaultOptions())
	repo := srv.NewRepo(t, "app")
	repo.Commit(files, "app")
	keyFile, khFile := filepath.Join(t.TempDir(), "key"), filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(keyFile, srv.ClientKey(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(khFile, srv.KnownHosts(), 0o600); err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: v1\ndata:\n  k: v\nkind: ConfigMap\nmetadata:\n  name: x-app\n"
	cache := t.TempDir()
	tests := []struct {
		name string
		args []string
	}{
		{"dir", []string{"--dir", dir, "--path", "deploy"}},
		{"http", []string{"--repo", repo.HTTPURL(), "--ref", "main", "--path", "deploy", "--username", srv.Username(), "--password", srv.Password(), "--cache-dir", cache}},
		{"token", []string{"--repo", repo.HTTPURL(), "--path", "deploy", "--token", srv.BearerToken(), "--cache-dir", cache}},
		{"ssh", []string{"--repo", repo.SSHURL(), "--path", "deploy", "--ssh-key", keyFile, "--known-hosts", khFile, "--cache-dir", cache}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runRefit(t, append([]string{"render"}, tc.args...)...)
			if err != nil {
				t.Fatalf("refit render: %v\n%s", err, out)
			}
			if out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
		})
	}
	failures := []struct {
		name string
		args []string
		want string
	}{
		{"no source", []string{"render"}, "set one of --dir and --repo"},
		{"both sources", []string{"render", "--dir", dir, "--repo", repo.HTTPURL()}, "set one of"},
		{"escape", []string{"render", "--dir", dir, "--path", "../.."}, "outside the repository root"},
		{"bad password", []string{"render", "--repo", repo.HTTPURL(), "--username", "refit", "--password", "wrong-password", "--cache-dir", cache}, "authentication failed"},
		{"ssh without known_hosts", []string{"render", "--repo", repo.SSHURL(), "--ssh-key", keyFile, "--cache-dir", cache}, "known_hosts"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			_, err := runRefit(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "wrong-password") {
				t.Errorf("error leaks the password: %v", err)
			}
			if exitCode(err) != 1 {
				t.Errorf("exit code = %d, want 1", exitCode(err))
			}
		})
	}
}
