package render

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckYAML(t *testing.T) {
	lim := Limits{MaxFileBytes: 1 << 20, MaxDocuments: 3, MaxNodes: 50, MaxAliasNodes: 20}
	tests := []struct {
		name, data, want string
	}{
		{"plain object", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", ""},
		{"not YAML at all", "\x00\x01binary\xff", ""},
		{"broken YAML passes to kustomize", "a: [b\n", ""},
		{"a few aliases", "a: &a {x: 1, y: 2}\nb: *a\nc: *a\n", ""},
		{"three documents", "a: 1\n---\nb: 2\n---\nc: 3\n", ""},
		{"four documents", "a: 1\n---\nb: 2\n---\nc: 3\n---\nd: 4\n", "more than 3 YAML documents"},
		{"nodes over the limit", "l: [" + strings.Repeat("x,", 60) + "]\n", "document 1: more than 50 YAML nodes"},
		{"nodes counted over documents", "l: [" + strings.Repeat("x,", 20) + "]\n---\nm: [" + strings.Repeat("x,", 30) + "]\n", "document 2: more than 50 YAML nodes"},
		{"alias expansion over the limit", "a: &a [1,2,3,4,5,6,7,8,9]\nb: [*a,*a,*a]\n", "too many aliases: expanding them would add more than 20 YAML nodes"},
		{"nested anchors counted once each", "a: &a [1,1,1]\nb: &b [*a,*a]\nc: &c [*b,*b]\nd: [*c]\n", "too many aliases"},
		{"self-referencing anchor", "a: &a [1, *a]\n", "an anchor refers to itself"}, // kyaml's DeAnchor would recurse until the stack overflows
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkYAML([]byte(tc.data), lim)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("err = %v, want none", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrTooLarge)):
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}
