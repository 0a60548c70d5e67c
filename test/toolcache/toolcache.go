// Package toolcache holds what the test tools built from the Go module proxy
// (the cluster binaries, Gitea) share: the cache folder refit owns, the file
// lock that makes concurrent builds wait for one another, and the tail of a
// failed build's log for its error.
package toolcache

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Dir is the folder refit owns for built tools and cluster state:
// $REFIT_CACHE_DIR, or refit/ under the user's cache folder (~/.cache/refit).
func Dir() (string, error) {
	if dir := os.Getenv("REFIT_CACHE_DIR"); dir != "" {
		return filepath.Abs(dir)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a cache folder (set REFIT_CACHE_DIR): %w", err)
	}
	return filepath.Join(base, "refit"), nil
}

// Lock takes an exclusive flock on path, waiting for it as long as ctx
// allows, and returns its release.
func Lock(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("wait for lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// LastLines returns the last n lines of s, ending in a newline.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	out := strings.Join(lines, "\n")
	if out != "" {
		out += "\n"
	}
	return out
}
