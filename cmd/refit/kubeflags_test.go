package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
)

const testKubeconfig = `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443"}
users:
- name: admin
  user: {token: admin-token}
contexts:
- name: ctx
  context: {cluster: c, user: admin, namespace: team-a}
current-context: ctx
`

func TestKubeFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(testKubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		args    []string
		wantImp rest.ImpersonationConfig
		wantNS  string
		wantErr string
	}{
		{name: "the kubeconfig's identity and namespace", wantNS: "team-a"},
		{
			name:    "--as a ServiceAccount, -n",
			args:    []string{"--as", "system:serviceaccount:team-a:deployer", "-n", "team-b"},
			wantImp: rest.ImpersonationConfig{UserName: "system:serviceaccount:team-a:deployer"}, wantNS: "team-b",
		},
		{
			name: "--as with groups, uid and extras",
			args: []string{"--as", "jane", "--as-group", "devs", "--as-group", "ops", "--as-uid", "42", "--as-user-extra", "scopes=a", "--as-user-extra", "scopes=b"},
			wantImp: rest.ImpersonationConfig{UserName: "jane", UID: "42", Groups: []string{"devs", "ops"},
				Extra: map[string][]string{"scopes": {"a", "b"}}},
			wantNS: "team-a",
		},
		{name: "--as-group without --as", args: []string{"--as-group", "system:masters"}, wantErr: "need --as"},
		{name: "an extra that is no KEY=VALUE", args: []string{"--as", "jane", "--as-user-extra", "scopes"}, wantErr: `--as-user-extra "scopes": want KEY=VALUE`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var f kubeFlags
			fl := pflag.NewFlagSet("test", pflag.ContinueOnError)
			f.register(fl)
			if err := fl.Parse(append([]string{"--kubeconfig", path}, tc.args...)); err != nil {
				t.Fatal(err)
			}
			cfg, ns, err := f.config()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("config: %v; want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantImp, cfg.Impersonate); diff != "" {
				t.Errorf("impersonation (-want +got):\n%s", diff)
			}
			if ns != tc.wantNS || cfg.BearerToken != "admin-token" || cfg.QPS != 500 || cfg.Burst != 1000 {
				t.Errorf("namespace %q token %q qps %v burst %d; want %q, the kubeconfig's token, 500, 1000", ns, cfg.BearerToken, cfg.QPS, cfg.Burst, tc.wantNS)
			}
			// With an identity, the app's state lives where it may write.
			if got := len(f.reconcileOptions(cfg, ns)); (got > 0) != (tc.wantImp.UserName != "") {
				t.Errorf("%d reconcile options; want the inventory namespace option only with --as", got)
			}
		})
	}
}

// The API server's token flag must not take the Git host's --token.
func TestKubeFlagsTokenIsNotTheGitToken(t *testing.T) {
	var f kubeFlags
	var src sourceFlags
	fl := pflag.NewFlagSet("test", pflag.ContinueOnError)
	src.register(fl)
	f.register(fl)
	if err := fl.Parse([]string{"--token", "git-token", "--kube-token", "api-token", "--cache-dir", "/tmp/x"}); err != nil {
		t.Fatal(err)
	}
	if src.token != "git-token" || *f.cf.BearerToken != "api-token" || src.cacheDir != "/tmp/x" {
		t.Errorf("git token %q, API token %q, cache dir %q", src.token, *f.cf.BearerToken, src.cacheDir)
	}
}
