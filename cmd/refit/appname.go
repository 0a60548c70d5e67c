package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"path"
	"path/filepath"
	"strings"
)

// defaultApp names the app of a plan or apply run without --app, from
// where its manifests come from: the repository URL (without credentials)
// or the absolute folder, and the path in it. Two folders never share an
// inventory, so a plan of one never lists the other's objects as
// deletions, and the same source always finds its own. The name is a
// readable prefix and a short hash: "shop-deploy-3f9a1c0b".
func defaultApp(dir, repo, subPath string) (string, error) {
	subPath = path.Clean(filepath.ToSlash(subPath))
	var key, base string
	switch {
	case repo != "":
		u, err := url.Parse(repo)
		if err != nil || u.Host == "" && u.Scheme != "file" {
			// scp-like SSH ("git@host:org/repo.git") has no scheme.
			key, base = "repo "+stripUserInfo(repo), repo
			if _, after, ok := strings.Cut(repo, ":"); ok {
				base = after
			}
			break
		}
		u.User = nil
		u.Host = strings.ToLower(u.Host)
		u.RawQuery, u.Fragment = "", ""
		key, base = "repo "+strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), ".git"), u.Path
	default:
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", fmt.Errorf("--dir %s: %w", dir, err)
		}
		// The same folder through a symlink is the same app.
		if real, err := filepath.EvalSymlinks(abs); err == nil {
			abs = real
		}
		key, base = "dir "+filepath.ToSlash(abs), filepath.ToSlash(abs)
	}
	sum := sha256.Sum256([]byte(key + "\x00" + subPath))
	prefix := path.Base(strings.TrimSuffix(strings.TrimSuffix(base, "/"), ".git"))
	if subPath != "." {
		prefix += "-" + subPath
	}
	prefix = dnsLabelish(prefix, 40)
	if prefix == "" {
		prefix = "app"
	}
	return prefix + "-" + hex.EncodeToString(sum[:4]), nil
}

// stripUserInfo drops "user@" of an scp-like address: the name must not
// change with the user, nor carry a secret.
func stripUserInfo(s string) string {
	if at := strings.LastIndex(s, "@"); at >= 0 {
		return s[at+1:]
	}
	return s
}

// dnsLabelish lower-cases s, turns every other character into "-", folds
// runs of them, trims them at both ends and keeps at most n bytes.
func dnsLabelish(s string, n int) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	out := b.String()
	if len(out) > n {
		out = out[:n]
	}
	return strings.Trim(out, "-")
}
