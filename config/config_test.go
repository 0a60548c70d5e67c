package config

import (
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
