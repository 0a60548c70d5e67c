package main

import "testing"

func TestPathScrubber(t *testing.T) {
	p := newPathScrubber("/var/cache/refit/sources/")
	cases := []struct{ name, in, want string }{
		{"file of the checkout", "render: /var/cache/refit/sources/0123456789abcdef/" + sha40 + "/deploy/app.yaml: line 3: mapping values are not allowed",
			"render: deploy/app.yaml: line 3: mapping values are not allowed"},
		{"temporary checkout", "checkout: open /var/cache/refit/sources/0123456789abcdef/.tmp-123/a/b: too many files", "checkout: open a/b: too many files"},
		{"the cache folder itself", "mkdir /var/cache/refit/sources: read-only file system", "mkdir [cache]: read-only file system"},
		{"a repository folder", `lock "/var/cache/refit/sources/0123456789abcdef": busy`, `lock "[cache]": busy`},
		{"other paths kept", "render: /etc/passwd is outside the repository", "render: /etc/passwd is outside the repository"},
		{"nothing to do", "applied and healthy", "applied and healthy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.scrub(tc.in); got != tc.want {
				t.Errorf("scrub(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if got := newPathScrubber("").scrub("/x/y"); got != "/x/y" {
		t.Errorf("no cache folder: scrub = %q", got)
	}
}

const sha40 = "0123456789abcdef0123456789abcdef01234567"
