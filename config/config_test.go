package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `apiVersion: refit.dev/v1alpha1
kind: Config
apps:
- name: shop
  source:
    url: https://git.example.com/team/shop.git
    ref: main
    secretRef: {name: shop-git}
  path: ./deploy
  interval: 30s
  namespace: shop
  prune: false
  status:
    provider: gitea
    apiURL: https://git.example.com
    tokenSecretRef: {name: gitea-token, key: token}
  webhook:
    provider: gitea
    secretFile: /etc/refit/hook-secret
- name: tools
  source: {url: "ssh://git@git.example.com/team/tools.git"}
`

func TestParse(t *testing.T) {
	cfg, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	shop, tools := cfg.Apps[0], cfg.Apps[1]
	if shop.Interval.Duration != 30*time.Second || shop.DriftInterval.Duration != 5*time.Minute || *shop.Prune {
		t.Errorf("shop: %+v", shop)
	}
	if tools.Path != "." || tools.Interval.Duration != time.Minute || !*tools.Prune || tools.Namespace != "default" || tools.Policy != "InPlaceIfPossible" {
		t.Errorf("tools defaults: %+v", tools)
	}
}

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct{ name, doc string }{
		{"document start marker", "---\n" + good},
		{"document end marker", good + "...\n"},
		{"trailing comment", good + "# the end\n"},
		{"http status on loopback", strings.Replace(good, "apiURL: https://git.example.com", "apiURL: http://127.0.0.1:3000", 1)},
		{"http status allowed", strings.Replace(good, "apiURL: https://git.example.com", "apiURL: http://git.example.com\n    insecure: true", 1)},
		{"verify from a file", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    verify: {keysFile: /etc/refit/keys}", 1)},
		{"service account", strings.Replace(good, "namespace: shop", "namespace: shop\n  serviceAccountName: deployer", 1)},
		{"checkout limits", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    limits: {maxFileSize: 8Mi, maxTreeSize: 1G, maxEntries: 500}", 1)},
		{"path in a subfolder with ..", strings.Replace(good, "path: ./deploy", "path: deploy/../overlays/prod", 1)},
		{"ref kinds", strings.Replace(good, "ref: main", "ref: semver:>=1.0.0 <2.0.0", 1)},
		{"tag ref", strings.Replace(good, "ref: main", "ref: tag:v1.2.3", 1)},
		{"commit ref", strings.Replace(good, "ref: main", "ref: 0123456789abcdef0123456789abcdef01234567", 1)},
		{"refs/heads ref", strings.Replace(good, "ref: main", "ref: refs/heads/release/1.x", 1)},
		{"suspended", strings.Replace(good, "path: ./deploy", "path: ./deploy\n  suspend: true", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Parse([]byte(tc.doc)); err != nil {
				t.Errorf("Parse: %v", err)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(file, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err != nil {
		t.Errorf("Load: %v", err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, file, want string }{
		{"empty file named", empty, empty + ": config is empty"},
		{"a directory", dir, dir + ": not a regular file"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown field with its line", strings.Replace(good, "  path: ./deploy", "  paht: ./deploy", 1), "line 9: field paht not found"},
		{"bad duration", strings.Replace(good, "30s", "soon", 1), "line 10"},
		{"wrong kind", strings.Replace(good, "kind: Config", "kind: Configuration", 1), "kind Config"},
		{"no url", "apiVersion: refit.dev/v1alpha1\nkind: Config\napps:\n- name: a\n", "source.url is required"},
		{"bad provider", strings.Replace(good, "provider: gitea\n    apiURL", "provider: svn\n    apiURL", 1), "status.provider"},
		{"duplicate", good + "- name: shop\n  source: {url: x}\n", "used twice"},
		{"bad name", strings.Replace(good, "name: tools", "name: Tools_1", 1), "lower-case"},
		{"no apps", "apiVersion: refit.dev/v1alpha1\nkind: Config\n", "no apps"},
		{"empty file", "", "config is empty"},
		{"only a comment", "# apps: none yet\n", "config is empty"},
		{"two documents of kind Config", good + "---\napiVersion: refit.dev/v1alpha1\nkind: Config\napps: []\n", "line 23: a second document of kind Config: want one"},
		{"a document of no kind after an empty one", good + "---\n# nothing\n---\nkind: x\n", `line 25: want apiVersion refit.dev/v1alpha1 and kind Config or App, got "" and "x"`},
		{"malformed second document", good + "---\n{\n", "after document 1: yaml: line 23"},
		{"ref of no known kind", strings.Replace(good, "ref: main", "ref: head:main", 1), `source.ref "head:main": want a branch`},
		{"ref: short commit", strings.Replace(good, "ref: main", "ref: commit:abc123", 1), `source.ref "commit:abc123"`},
		{"ref with a space", strings.Replace(good, "ref: main", "ref: my branch", 1), `source.ref "my branch"`},
		{"negative interval", strings.Replace(good, "interval: 30s", "interval: -30s", 1), "interval -30s: at least 1s"},
		{"negative drift interval", strings.Replace(good, "interval: 30s", "interval: 30s\n  driftInterval: -1m", 1), "driftInterval -1m0s: want a positive duration"},
		{"negative timeout", strings.Replace(good, "interval: 30s", "interval: 30s\n  timeout: -5m", 1), "timeout -5m0s: want a positive duration"},
		{"namespace not a DNS label", strings.Replace(good, "namespace: shop", "namespace: Shop_Prod", 1), `namespace "Shop_Prod": a lowercase RFC 1123 label`},
		{"namespace with a dot", strings.Replace(good, "namespace: shop", "namespace: shop.prod", 1), `namespace "shop.prod"`},
		{"namespace too long", strings.Replace(good, "namespace: shop", "namespace: "+strings.Repeat("a", 64), 1), "must be no more than 63 characters"},
		{"absolute path", strings.Replace(good, "path: ./deploy", "path: /etc", 1), `path "/etc": want a path inside the repository`},
		{"path climbing out", strings.Replace(good, "path: ./deploy", "path: deploy/../../x", 1), `path "deploy/../../x"`},
		{"serviceAccountName invalid", strings.Replace(good, "namespace: shop", "namespace: shop\n  serviceAccountName: Deployer!", 1), `serviceAccountName "Deployer!": a lowercase RFC 1123 subdomain`},
		{"verify with both", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    verify: {secretRef: {name: keys}, keysFile: /k}", 1), "source.verify: set secretRef or keysFile, not both"},
		{"file size not a size", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    limits: {maxFileSize: big}", 1), `source.limits.maxFileSize: "big": want a size such as 64Mi`},
		{"tree size not positive", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    limits: {maxTreeSize: \"0\"}", 1), `source.limits.maxTreeSize: "0": want a positive size`},
		{"negative entries", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    limits: {maxEntries: -1}", 1), "source.limits.maxEntries -1"},
		{"verify with neither", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    verify: {}", 1), "source.verify: set secretRef or keysFile"},
		{"verify secret name invalid", strings.Replace(good, "secretRef: {name: shop-git}", "secretRef: {name: shop-git}\n    verify: {secretRef: {name: ../keys}}", 1), `source.verify.secretRef.name "../keys"`},
		{"status token from both", strings.Replace(good, "tokenSecretRef: {name: gitea-token, key: token}", "tokenSecretRef: {name: gitea-token, key: token}\n    tokenFile: /t", 1), "status: set tokenSecretRef or tokenFile, not both"},
		{"status token key invalid", strings.Replace(good, "key: token}", "key: a/b}", 1), `status.tokenSecretRef.key "a/b"`},
		{"status over http", strings.Replace(good, "apiURL: https://git.example.com", "apiURL: http://git.example.com", 1), "status.apiURL http://git.example.com: plain http sends the token in clear text; use https or set status.insecure"},
		{"status URL with credentials", strings.Replace(good, "apiURL: https://git.example.com", "apiURL: https://u:pw@git.example.com", 1), "status.apiURL: credentials in the URL"},
		{"status URL not http", strings.Replace(good, "apiURL: https://git.example.com", "apiURL: ftp://git.example.com", 1), "status.apiURL: want an http(s) URL"},
		{"webhook secret from neither", strings.Replace(good, "    secretFile: /etc/refit/hook-secret\n", "", 1), "webhook: set secretSecretRef or secretFile"},
		{"git secret name invalid", strings.Replace(good, "{name: shop-git}", "{name: Shop_Git}", 1), `source.secretRef.name "Shop_Git"`},
		{"alias bomb", "apiVersion: refit.dev/v1alpha1\nkind: Config\nx: &a [1,1,1,1,1,1,1,1,1,1]\ny: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nz: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nw: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\nv: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\napps: []\n", "field x not found"},
		{"apps not a list", "apiVersion: refit.dev/v1alpha1\nkind: Config\napps: shop\n", "line 3"},
		{"null app", "apiVersion: refit.dev/v1alpha1\nkind: Config\napps: [null]\n", "no apps"},
		{"too large", "apiVersion: refit.dev/v1alpha1\nkind: Config\n#" + strings.Repeat("x", MaxSize) + "\n", "config is larger than 1048576 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
