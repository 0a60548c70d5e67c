package source

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPayloadRepoURLs: any body, however malformed, is read without a
// panic; what it yields are the strings the payload holds, and a URL
// matches a repository only when their keys agree.
func FuzzPayloadRepoURLs(f *testing.F) {
	for _, seed := range []string{
		`{"repository":{"clone_url":"https://github.com/acme/app.git","ssh_url":"git@github.com:acme/app.git"}}`,
		`{"project":{"git_http_url":"https://gitlab.com/a/b.git","web_url":"https://gitlab.com/a/b"}}`,
		`{"repository":"x"}`, `{"repository":null}`, `[]`, `null`, ``, `{`, `{"repository":{"html_url":7}}`,
		`{"repository":{"clone_url":"ssh://[::1]:22/a"}}`, `{"repository":{"clone_url":"file:///srv/a"}}`,
	} {
		f.Add([]byte(seed), "https://github.com/acme/app")
	}
	f.Fuzz(func(t *testing.T, body []byte, repoURL string) {
		urls, err := payloadRepoURLs(body)
		if err != nil && urls != nil {
			t.Fatalf("error %v with URLs %q", err, urls)
		}
		for _, u := range urls {
			if u == "" {
				t.Fatalf("empty URL in %q", urls)
			}
		}
		key := repoKey(repoURL)
		if matchesAny(repoURL, urls) {
			if key == "" {
				t.Fatalf("%q names no repository but matched %q", repoURL, urls)
			}
			found := false
			for _, u := range urls {
				found = found || repoKey(u) == key
			}
			if !found {
				t.Fatalf("%q matched %q without an equal key", repoURL, urls)
			}
		}
		if key != "" && key != strings.ToLower(key) {
			t.Fatalf("key %q is not lower-case", key)
		}
	})
}

// FuzzReceiver sends any body and signature to a Receiver of one signed
// hook: it never panics, answers with one of the statuses it documents,
// and fires the trigger only for a correctly signed payload that names
// the hook's repository.
func FuzzReceiver(f *testing.F) {
	const secret = "fuzz-secret-0123456789"
	const repo = "https://git.example.com/acme/app.git"
	f.Add([]byte(`{"repository":{"clone_url":"`+repo+`"}}`), true, "d1")
	f.Add([]byte(`{"repository":{"clone_url":"https://git.example.com/acme/other.git"}}`), true, "")
	f.Add([]byte(`{"ref":"refs/heads/main"}`), true, "")
	f.Add([]byte(`{`), true, "d2")
	f.Add([]byte(`{"repository":{"clone_url":"`+repo+`"}}`), false, "")
	f.Fuzz(func(t *testing.T, body []byte, signed bool, delivery string) {
		tr := NewTrigger()
		opts := DefaultReceiverOptions()
		opts.MaxBody = 4096
		recv, err := NewReceiver(opts, Hook{Path: "/h", Provider: Gitea, Secret: secret, RepoURL: repo, Trigger: tr})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, "/h", strings.NewReader(string(body)))
		sig := strings.Repeat("0", 64)
		if signed {
			m := hmac.New(sha256.New, []byte(secret))
			m.Write(body)
			sig = hex.EncodeToString(m.Sum(nil))
		}
		req.Header.Set("X-Gitea-Signature", sig)
		if delivery != "" && !strings.ContainsAny(delivery, "\r\n\x00") {
			req.Header.Set("X-Gitea-Delivery", delivery)
		}
		rec := httptest.NewRecorder()
		recv.ServeHTTP(rec, req)
		fired := false
		select {
		case <-tr.C():
			fired = true
		default:
		}
		switch rec.Code {
		case http.StatusAccepted:
			urls, err := payloadRepoURLs(body)
			if !fired || !signed || len(body) > 4096 || err != nil || !matchesAny(repo, urls) {
				t.Fatalf("202 for signed=%v body %q (fired %v)", signed, body, fired)
			}
		case http.StatusOK, http.StatusBadRequest, http.StatusForbidden, http.StatusRequestEntityTooLarge:
			if fired {
				t.Fatalf("trigger fired with status %d for body %q", rec.Code, body)
			}
		default:
			t.Fatalf("unexpected status %d for body %q", rec.Code, body)
		}
		if !signed && rec.Code != http.StatusForbidden && rec.Code != http.StatusRequestEntityTooLarge {
			t.Fatalf("unsigned body answered %d", rec.Code)
		}
	})
}
