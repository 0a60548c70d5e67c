package gitea

import (
	"fmt"
	"path/filepath"
	"strings"
)

type iniParams struct {
	RunUser string
	// Root: Gitea refuses to run as root unless told it may.
	Root          bool
	Dir           string // the instance's folder
	StaticDir     string // STATIC_ROOT_PATH: locale files, templates
	Port          int
	SecretKey     string
	InternalToken string
}

// appINI is a configuration for a test instance: installed, SQLite,
// loopback only, nothing that reaches the network on its own (offline,
// no mailer, no update checker, no cron), and webhooks allowed to call
// loopback addresses (by default Gitea refuses them) without TLS checks.
// The secrets are set so Gitea does not write them back into the file.
func appINI(p iniParams) string {
	path := func(elem ...string) string { return filepath.Join(append([]string{p.Dir}, elem...)...) }
	var b strings.Builder
	fmt.Fprintf(&b, "APP_NAME = refit test gitea\nRUN_USER = %s\nRUN_MODE = prod\nWORK_PATH = %s\n", p.RunUser, path("work"))
	if p.Root {
		b.WriteString("I_AM_BEING_UNSAFE_RUNNING_AS_ROOT = true\n")
	}
	sections := []struct {
		name string
		keys [][2]string
	}{
		{"server", [][2]string{
			{"PROTOCOL", "http"},
			{"HTTP_ADDR", "127.0.0.1"},
			{"HTTP_PORT", fmt.Sprint(p.Port)},
			{"DOMAIN", "127.0.0.1"},
			{"ROOT_URL", fmt.Sprintf("http://127.0.0.1:%d/", p.Port)},
			{"LOCAL_ROOT_URL", fmt.Sprintf("http://127.0.0.1:%d/", p.Port)},
			{"APP_DATA_PATH", path("data")},
			{"STATIC_ROOT_PATH", p.StaticDir},
			{"OFFLINE_MODE", "true"},
			{"DISABLE_SSH", "true"},
			{"START_SSH_SERVER", "false"},
			{"LFS_START_SERVER", "false"},
		}},
		{"database", [][2]string{
			{"DB_TYPE", "sqlite3"},
			{"PATH", path("data", "gitea.db")},
			{"SQLITE_JOURNAL_MODE", "WAL"},
		}},
		{"repository", [][2]string{
			{"ROOT", path("repositories")},
			{"DEFAULT_BRANCH", "main"},
		}},
		{"security", [][2]string{
			{"INSTALL_LOCK", "true"},
			{"SECRET_KEY", p.SecretKey},
			{"INTERNAL_TOKEN", p.InternalToken},
			{"PASSWORD_HASH_ALGO", "pbkdf2_hi"},
		}},
		{"service", [][2]string{
			{"DISABLE_REGISTRATION", "true"},
			{"REQUIRE_SIGNIN_VIEW", "false"},
			{"DEFAULT_KEEP_EMAIL_PRIVATE", "true"},
		}},
		{"webhook", [][2]string{
			{"ALLOWED_HOST_LIST", "loopback"},
			{"SKIP_TLS_VERIFY", "true"},
			{"DELIVER_TIMEOUT", "5"},
		}},
		{"mailer", [][2]string{{"ENABLED", "false"}}},
		{"oauth2", [][2]string{{"ENABLED", "false"}}},
		{"actions", [][2]string{{"ENABLED", "false"}}},
		{"packages", [][2]string{{"ENABLED", "false"}}},
		{"cron", [][2]string{{"ENABLED", "false"}}},
		{"cron.update_checker", [][2]string{{"ENABLED", "false"}}},
		{"indexer", [][2]string{{"ISSUE_INDEXER_PATH", path("data", "indexers", "issues.bleve")}}},
		{"queue", [][2]string{{"TYPE", "channel"}}},
		{"session", [][2]string{{"PROVIDER", "memory"}}},
		{"cache", [][2]string{{"ADAPTER", "memory"}}},
		{"log", [][2]string{
			{"MODE", "console"},
			{"LEVEL", "Info"},
			{"ROOT_PATH", path("log")},
		}},
		{"git", [][2]string{{"HOME_PATH", path("data", "home")}}},
	}
	for _, s := range sections {
		fmt.Fprintf(&b, "\n[%s]\n", s.name)
		for _, kv := range s.keys {
			fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
		}
	}
	return b.String()
}
