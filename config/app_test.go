package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/refit-gitops/refit/api/v1alpha1"
)

// goodApps is good (the kind Config) written as App objects.
const goodApps = `apiVersion: refit.dev/v1alpha1
kind: App
metadata:
  name: shop
  namespace: shop
spec:
  source:
    url: https://git.example.com/team/shop.git
    ref: main
    secretRef: {name: shop-git}
  path: ./deploy
  interval: 30s
  prune: false
  status:
    provider: gitea
    apiURL: https://git.example.com
    tokenSecretRef: {name: gitea-token, key: token}
  webhook:
    provider: gitea
    secretFile: /etc/refit/hook-secret
---
apiVersion: refit.dev/v1alpha1
kind: App
metadata: {name: tools}
spec:
  source: {url: "ssh://git@git.example.com/team/tools.git"}
`

// TestParseOneSchema: the same apps written as a Config and as App
// objects are the same value, but for the App's namespace, where its
// Secrets and ServiceAccount are looked up.
func TestParseOneSchema(t *testing.T) {
	fromConfig, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	fromApps, err := Parse([]byte(goodApps))
	if err != nil {
		t.Fatal(err)
	}
	want := fromConfig.Apps
	want[0].AppNamespace = "shop"
	if d := cmp.Diff(want, fromApps.Apps); d != "" {
		t.Errorf("apps (-kind Config +kind App):\n%s", d)
	}
}

func TestParseApps(t *testing.T) {
	app := func(name, spec string) string {
		return "apiVersion: refit.dev/v1alpha1\nkind: App\nmetadata: {name: " + name + ", namespace: team}\nspec: " + spec + "\n"
	}
	for _, tc := range []struct {
		name, doc string
		check     func(t *testing.T, c *Config)
	}{
		{"defaults as the CRD's", app("a", "{source: {url: x}}"), func(t *testing.T, c *Config) {
			a := c.Apps[0]
			if a.Path != "." || a.Interval.Duration != time.Minute || a.DriftInterval.Duration != 10*time.Minute ||
				a.Timeout.Duration != 5*time.Minute || !*a.Prune || a.Policy != "InPlaceIfPossible" || a.Namespace != "team" {
				t.Errorf("defaults: %+v", a)
			}
		}},
		{"target namespace", app("a", "{source: {url: x}, targetNamespace: web}"), func(t *testing.T, c *Config) {
			if a := c.Apps[0]; a.Namespace != "web" || a.AppNamespace != "team" {
				t.Errorf("namespace %q, app namespace %q", a.Namespace, a.AppNamespace)
			}
		}},
		{"every field", app("a", `{source: {url: x, ref: "semver:>=1.0.0 <2.0.0", secretRef: {name: git, key: k},
  usernameFile: /u, passwordFile: /p, tokenFile: /t, sshKeyFile: /s, knownHostsFile: /k,
  verify: {keysFile: /keys}, limits: {maxFileSize: 8Mi, maxTreeSize: 1Gi, maxEntries: 5}},
  path: apps/a, interval: 2m, driftInterval: 1h, timeout: 90s, prune: true, allowEmpty: true, policy: Recreate,
  serviceAccountName: deployer, status: {provider: bitbucket, username: me, tokenFile: /tok, apiURL: "http://10.0.0.1", insecure: true},
  webhook: {provider: generic, secretSecretRef: {name: hook}}}`), func(t *testing.T, c *Config) {
			yes := true
			want := App{
				Name: "a", AppNamespace: "team", Namespace: "team", Path: "apps/a",
				Source: Source{URL: "x", Ref: "semver:>=1.0.0 <2.0.0", SecretRef: &SecretRef{Name: "git", Key: "k"},
					UsernameFile: "/u", PasswordFile: "/p", TokenFile: "/t", SSHKeyFile: "/s", KnownHostsFile: "/k",
					Verify: &Verify{KeysFile: "/keys"}, Limits: &Limits{MaxFileSize: "8Mi", MaxTreeSize: "1Gi", MaxEntries: 5}},
				Interval: Duration{2 * time.Minute}, DriftInterval: Duration{time.Hour}, Timeout: Duration{90 * time.Second},
				Prune: &yes, AllowEmpty: true, Policy: "Recreate", ServiceAccountName: "deployer",
				Status:  &Status{Provider: "bitbucket", Username: "me", TokenFile: "/tok", APIURL: "http://10.0.0.1", Insecure: true},
				Webhook: &Webhook{Provider: "generic", SecretSecretRef: &SecretRef{Name: "hook"}},
			}
			if d := cmp.Diff(want, c.Apps[0]); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		}},
		{"suspended apps are set apart", app("a", "{source: {url: x}, suspend: true}") + "---\n" + app("b", "{source: {url: x}}"), func(t *testing.T, c *Config) {
			if len(c.Apps) != 1 || c.Apps[0].Name != "b" || len(c.Suspended) != 1 || c.Suspended[0].Name != "a" {
				t.Errorf("apps %v, suspended %v", c.Apps, c.Suspended)
			}
		}},
		{"with a Config, in the file's order", app("a", "{source: {url: x}}") + "---\n" + good, func(t *testing.T, c *Config) {
			if len(c.Apps) != 3 || c.Apps[0].Name != "a" || c.Apps[2].Name != "tools" {
				t.Errorf("apps %v", c.Apps)
			}
		}},
		{"status from a kubectl get is ignored", app("a", "{source: {url: x}}") + "status: {observedGeneration: 3}\n", nil},
		{"empty documents around", "---\n" + app("a", "{source: {url: x}}") + "---\n---\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

func TestParseAppErrors(t *testing.T) {
	const head = "apiVersion: refit.dev/v1alpha1\nkind: App\nmetadata:\n  name: shop\nspec:\n  source:\n    url: x\n" // spec's fields from line 8
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown field", head + "  paht: ./deploy\n", `line 8: unknown field "spec.paht"`},
		{"field names are case-sensitive", head + "  Path: ./deploy\n", `line 8: unknown field "spec.Path"`},
		{"duplicate field", head + "  path: a\n  path: b\n", `mapping key "path" already defined`},
		{"bad duration", head + "  timeout: 1s\n  interval: soon\n", `line 9: time: invalid duration "soon"`},
		{"wrong type", head + "  prune: maybe\n", "line 8: cannot unmarshal string into Go struct field AppSpec.spec.prune of type bool"},
		{"interval too short", head + "  interval: 500ms\n", "line 8: App shop: interval 500ms: at least 1s"},
		{"negative timeout", head + "  timeout: -1m\n", "line 8: App shop: timeout -1m0s: want a positive duration"},
		{"zero timeout is not the default", head + "  timeout: 0s\n", "line 8: App shop: timeout 0s: want a positive duration"},
		{"zero drift interval", head + "  driftInterval: 0s\n", "line 8: App shop: driftInterval 0s: want a positive duration"},
		{"zero interval", head + "  interval: 0s\n", "line 8: App shop: interval 0s: at least 1s"},
		{"path with ..", head + "  path: a/../b\n", `line 8: App shop: path "a/../b": want a path inside the repository (relative, no .. segment)`},
		{"absolute path", head + "  path: /etc\n", `line 8: App shop: path "/etc"`},
		{"bad ref", head + "    ref: commit:abc\n", `line 8: App shop: source.ref "commit:abc"`},
		{"no url", strings.Replace(head, "    url: x\n", "    ref: main\n", 1), "line 6: App shop: source.url is required"},
		{"bad name", strings.Replace(head, "name: shop", "name: Shop", 1), `line 4: App Shop: name "Shop": lower-case letters`},
		{"bad target namespace", head + "  targetNamespace: Web_1\n", `line 8: App shop: namespace "Web_1"`},
		{"bad policy", head + "  policy: Sometimes\n", `line 8: App shop: policy "Sometimes"`},
		{"status token from both", head + "  status:\n    provider: github\n    tokenFile: /t\n    tokenSecretRef: {name: t}\n", "line 8: App shop: status: set tokenSecretRef or tokenFile, not both"},
		{"status provider", head + "  status:\n    provider: svn\n    tokenFile: /t\n", "line 9: App shop: status.provider"},
		{"webhook secret from neither", head + "  webhook: {provider: github}\n", "line 8: App shop: webhook: set secretSecretRef or secretFile"},
		{"verify with neither", head + "    verify: {}\n", "line 8: App shop: source.verify: set secretRef or keysFile"},
		{"limits", head + "    limits: {maxFileSize: \"0\"}\n", `line 8: App shop: source.limits.maxFileSize: "0": want a positive size`},
		{"several errors, each with its line, once", head + "  interval: 500ms\n  policy: Sometimes\n", "line 8: App shop: interval 500ms: at least 1s\nline 9: App shop: policy"},
		{"name used twice", head + "---\n" + head, "line 9: App shop: name \"shop\" used twice"},
		{"name used twice with a Config", good + "---\n" + strings.Replace(head, "name: shop", "name: tools", 1), `name "tools" used twice`},
		{"another version", strings.Replace(head, "v1alpha1", "v1", 1), `line 1: want apiVersion refit.dev/v1alpha1 and kind Config or App, got "refit.dev/v1" and "App"`},
		{"spec not a mapping", "apiVersion: refit.dev/v1alpha1\nkind: App\nmetadata: {name: a}\nspec: [1]\n", "line 4: cannot unmarshal array into Go struct field App.spec"},
		{"keys not strings", head + "  {a: 1}: x\n", "line 1: yaml: invalid map key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestFromObjectDefaults: an App with the CRD's defaults written out (as
// the API server stores it) and one without them become the same App, so
// the CRD's defaults and Defaults agree.
func TestFromObjectDefaults(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "deploy", "crds", "refit.dev_apps.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties struct {
							Spec struct {
								Properties map[string]struct {
									Default any `json:"default"`
								} `json:"properties"`
							} `json:"spec"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := sigsyaml.Unmarshal(data, &crd); err != nil {
		t.Fatal(err)
	}
	defaults := map[string]any{"source": map[string]any{"url": "https://x"}}
	for name, p := range crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties.Spec.Properties {
		if p.Default != nil {
			defaults[name] = p.Default
		}
	}
	if len(defaults) < 6 {
		t.Fatalf("the CRD defaults only %v", defaults)
	}
	raw, err := json.Marshal(defaults)
	if err != nil {
		t.Fatal(err)
	}
	meta := metav1.ObjectMeta{Name: "a", Namespace: "n"}
	defaulted := &v1alpha1.App{ObjectMeta: meta}
	if err := json.Unmarshal(raw, &defaulted.Spec); err != nil {
		t.Fatal(err)
	}
	bare := &v1alpha1.App{ObjectMeta: meta, Spec: v1alpha1.AppSpec{Source: v1alpha1.Source{URL: "https://x"}}}
	a, err := FromObject(bare, DefaultObjectOptions())
	if err != nil {
		t.Fatal(err)
	}
	b, err := FromObject(defaulted, DefaultObjectOptions())
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(a, b); d != "" {
		t.Errorf("CRD defaults %s (-not defaulted +defaulted):\n%s", raw, d)
	}
	if *b.Prune = false; !*defaulted.Spec.Prune {
		t.Error("the App shares its prune flag with the object")
	}
}

func TestLookupNamespaces(t *testing.T) {
	c, err := Parse([]byte(goodApps + "---\napiVersion: refit.dev/v1alpha1\nkind: App\nmetadata: {name: web, namespace: team}\nspec: {source: {url: x}, targetNamespace: web}\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ app, secrets, sa string }{
		{"shop", "shop", "shop"},             // an App object: its own namespace
		{"tools", "refit-system", "default"}, // no namespace: as a Config entry
		{"web", "team", "team"},              // objects go to web, identity and Secrets stay in team
	} {
		for _, a := range c.Apps {
			if a.Name != tc.app {
				continue
			}
			if got := a.SecretNamespace("refit-system"); got != tc.secrets {
				t.Errorf("%s: Secrets in %q, want %q", a.Name, got, tc.secrets)
			}
			if got := a.ServiceAccountNamespace(); got != tc.sa {
				t.Errorf("%s: ServiceAccount in %q, want %q", a.Name, got, tc.sa)
			}
		}
	}
}

func TestFromObjectLocalFiles(t *testing.T) {
	for _, tc := range []struct{ name, url, want string }{
		{"https", "https://git.example.com/a.git", ""},
		{"ssh", "ssh://git@git.example.com/a.git", ""},
		{"scp-like", "git@git.example.com:team/a.git", ""},
		{"file URL", "file:///srv/git/a.git", `source.url "file:///srv/git/a.git": a repository on refit's own filesystem`},
		{"FILE URL", "FILE:///srv/git/a.git", "a repository on refit's own filesystem"},
		{"absolute path", "/var/cache/refit/sources/x", "a repository on refit's own filesystem"},
		{"relative path", "repo", "a repository on refit's own filesystem"},
		{"path with a colon after a slash", "./a:b", "a repository on refit's own filesystem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := &v1alpha1.App{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "team"},
				Spec: v1alpha1.AppSpec{Source: v1alpha1.Source{URL: tc.url}}}
			_, err := FromObject(o, DefaultObjectOptions())
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("FromObject: %v, want %q", err, tc.want)
			}
			if _, err := FromObject(o, ObjectOptions{LocalFiles: true}); err != nil {
				t.Errorf("FromObject with local files: %v", err)
			}
		})
	}
	files := &v1alpha1.App{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "team"}, Spec: v1alpha1.AppSpec{
		Source: v1alpha1.Source{URL: "https://x", UsernameFile: "/u", PasswordFile: "/p", TokenFile: "/t", SSHKeyFile: "/s",
			KnownHostsFile: "/k", Verify: &v1alpha1.Verify{KeysFile: "/keys"}},
		Status:  &v1alpha1.CommitStatus{Provider: "github", TokenFile: "/var/run/secrets/kubernetes.io/serviceaccount/token"},
		Webhook: &v1alpha1.Webhook{Provider: "github", SecretFile: "/h"},
	}}
	_, err := FromObject(files, DefaultObjectOptions())
	for _, f := range []string{"source.usernameFile", "source.passwordFile", "source.tokenFile", "source.sshKeyFile",
		"source.knownHostsFile", "source.verify.keysFile", "status.tokenFile", "webhook.secretFile"} {
		if err == nil || !strings.Contains(err.Error(), f+": a file on refit's own filesystem: not allowed for App objects") {
			t.Errorf("FromObject: %v; want %s refused", err, f)
		}
	}
	if _, err := FromObject(files, ObjectOptions{LocalFiles: true}); err != nil {
		t.Errorf("FromObject with local files: %v", err)
	}
}
